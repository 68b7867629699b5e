"""What a running task may know about itself: `current()` inside a task body.

    from workers import current
    if current().attempt > 1: ...

Set by the runtime for each attempt (also inside the thread a sync task runs in).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskContext:
    run_id: str
    node_id: str
    attempt: int
    task: str
    worker: str
    delivery: int  # how many times this attempt's message has been delivered (1 = first)
    traceparent: str | None = None  # the attempt's span (W3C trace context)
    # Where the attempt's log lines go (the worker's LogCapture), or None when not captured.
    log_sink: Any = field(default=None, compare=False, repr=False)


_current: ContextVar[TaskContext | None] = ContextVar("conveyor_task_context", default=None)


def current() -> TaskContext:
    """The context of the task attempt running now; RuntimeError outside a task."""
    context = _current.get()
    if context is None:
        raise RuntimeError("workers.current() is only available inside a task run by a Worker")
    return context
