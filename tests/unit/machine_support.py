"""Helpers for the machine's tests: events built the way workers and the timer wheel build them,
and commands read back as short, comparable facts."""

from __future__ import annotations

import json
from typing import Any

from events.models import (
    ErrorInfo,
    RunCancelRequested,
    RunRequested,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TimerFired,
)
from orchestrator.core.commands import CancelTimer, Command, Dispatch, Emit, StartTimer
from orchestrator.core.compiler import CompiledSpec, compile_spec
from orchestrator.core.machine import start_run
from orchestrator.core.state import RunState, Transition

RUN = "run-1"
NOW = 1_000.0


def spec_of(nodes: list[dict[str, Any]], **extra: Any) -> CompiledSpec:
    return compile_spec({"name": "wf", "nodes": nodes, **extra})


def start(
    spec: CompiledSpec, run_input: dict[str, Any] | None = None, now: float = NOW
) -> Transition:
    return start_run(spec, RUN, RunRequested(workflow=spec.name, input=run_input or {}), now)


def run_of(transition: Transition) -> RunState:
    assert transition.run is not None
    return transition.run


def started(node: str, attempt: int = 1, worker: str = "w1") -> TaskStarted:
    return TaskStarted(run_id=RUN, node_id=node, attempt=attempt, worker=worker)


def completed(node: str, output: Any = None, attempt: int = 1) -> TaskCompleted:
    return TaskCompleted(run_id=RUN, node_id=node, attempt=attempt, worker="w1", output=output)


def failed(
    node: str,
    attempt: int = 1,
    error_type: str = "ValueError",
    retryable: bool = True,
    message: str = "boom",
) -> TaskFailed:
    error = ErrorInfo(type=error_type, message=message, retryable=retryable)
    return TaskFailed(run_id=RUN, node_id=node, attempt=attempt, worker="w1", error=error)


def cancel(reason: str = "stop") -> RunCancelRequested:
    return RunCancelRequested(run_id=RUN, reason=reason)


def fired(timer: StartTimer) -> TimerFired:
    """The event the timer wheel publishes when `timer` is due."""
    return TimerFired(
        run_id=timer.run_id,
        timer_id=timer.timer_id,
        kind=timer.kind,  # type: ignore[arg-type]
        node_id=timer.node_key,
        attempt=timer.attempt,
    )


def dispatches(transition: Transition) -> list[Dispatch]:
    return [c for c in transition.commands if isinstance(c, Dispatch)]


def dispatched_keys(transition: Transition) -> list[str]:
    return [d.node_key for d in dispatches(transition)]


def timers(transition: Transition, kind: str | None = None) -> list[StartTimer]:
    return [
        c
        for c in transition.commands
        if isinstance(c, StartTimer) and (kind is None or c.kind == kind)
    ]


def cancelled_timers(transition: Transition) -> list[str]:
    return [c.timer_id for c in transition.commands if isinstance(c, CancelTimer)]


def emits(transition: Transition, event_type: str) -> list[Emit]:
    return [c for c in transition.commands if isinstance(c, Emit) and c.event_type == event_type]


def describe(command: Command) -> str:
    """A command as one short line: what replayed histories record and compare."""
    if isinstance(command, Dispatch):
        task_input = json.dumps(command.input, sort_keys=True)
        return f"dispatch {command.node_key}#{command.attempt} {command.task} {task_input}"
    if isinstance(command, StartTimer):
        return f"timer {command.kind} {command.node_key}#{command.attempt} at {command.due_at}"
    if isinstance(command, CancelTimer):
        return f"cancel-timer {command.timer_id}"
    return f"emit {command.event_type} {command.key}"


def summary(run: RunState) -> dict[str, Any]:
    """The meaningful parts of a run's state: what a user sees, not when it was written."""
    return {
        "status": run.status,
        "output": run.output,
        "error": run.error,
        "nodes": {
            key: {
                "status": node.status,
                "attempt": node.attempt,
                "input": node.input,
                "output": node.output,
                "error": node.error,
            }
            for key, node in sorted(run.nodes.items())
        },
    }
