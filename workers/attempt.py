"""One attempt of one task: refused before it runs (delivered too often, a task this worker does
not have, a claim-checked input that cannot be read), or run — input validated from the
function's hints, the function called (async on the loop, sync on a thread unless it is
`inline`) within its timeout —
and its outcome as a JSON-ready output or a typed `ErrorInfo` (type, message, traceback,
retryable), never a formatted string."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
import traceback
from collections.abc import Awaitable, Mapping
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic

from events.errors import BusError, BusUnavailable
from events.models import ErrorInfo, TaskDispatched
from workers.context import TaskContext, _current
from workers.errors import NonRetryableError
from workers.task import Task

if TYPE_CHECKING:  # the bus (nats) is loaded by the worker runtime, not by `import workers`
    from events.bus import Bus

_ANY: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Any)  # built once: ~40 µs each time


@dataclass(slots=True)
class Result:
    output: Any = None  # JSON-ready
    encoded: bytes = b"null"  # the output as JSON (to measure it against the inline limit)
    error: ErrorInfo | None = None


def refusal(
    dispatched: TaskDispatched,
    deliveries: int,
    limit: int,
    tasks: Mapping[str, Task[Any, Any]],
    worker: str,
) -> ErrorInfo | None:
    """Why this worker gives up on the attempt without running it, or None to run it."""
    if deliveries > limit:
        return ErrorInfo(
            type="WorkerLost",
            message=f"task {dispatched.task!r} was delivered {deliveries - 1} times and every "
            "worker process that took it died or went silent before finishing (crash, kill -9, "
            "out of memory?), even though it ran alone from its 2nd delivery on; giving up on "
            f"this attempt after {limit}",
            retryable=True,
        )
    if dispatched.task not in tasks:
        # Tasks are routed by name, so this takes a message published by hand on a task's
        # subject with another task inside.
        return ErrorInfo(
            type="UnknownTask",
            message=f"worker {worker} has no task named {dispatched.task!r} (it has: "
            f"{', '.join(sorted(tasks))}); the message came on the subject of another task",
            retryable=True,
        )
    return None


async def claimed_input(bus: Bus, dispatched: TaskDispatched) -> Any:
    """The attempt's input, read from its claim check when it has one; an ErrorInfo when the
    artifact is gone or is not JSON (the same on every delivery and every retry)."""
    ref = dispatched.input_ref
    if ref is None:
        return dispatched.input
    try:
        return json.loads(await bus.get_artifact(ref))
    except BusUnavailable:
        raise  # the object store is unreachable for now: the delivery comes back
    except BusError as exc:
        problem = f"{exc} (deleted, or expired with the object store's TTL?)"
    except ValueError as exc:
        problem = f"artifact {ref} is not JSON: {exc}"
    return ErrorInfo(
        type="InputUnavailable",
        message=f"the input of this attempt cannot be read: {problem}",
        retryable=False,
    )


def died_alone(dispatched: TaskDispatched, deliveries: int, how: str) -> ErrorInfo:
    """The attempt killed the process it ran alone in on its last allowed delivery."""
    return ErrorInfo(
        type="WorkerLost",
        message=f"task {dispatched.task!r} killed its worker {deliveries - 1} times when run "
        f"alone (from its 2nd delivery on it ran in a process of its own; the last one ended: "
        f"{how}); giving up on this attempt after {deliveries} deliveries",
        retryable=True,
    )


# How long the loop waits, blocked, for a sync task it has just handed to a thread before it goes
# back to its other work. A task that ends within it (most do: a no-op, a lookup, a small
# transform) is picked up at once, without the asyncio future, the loop's wake-up through its
# self-pipe and the epoll turn that awaiting a thread costs: measured on this 2-core machine,
# ~50 µs a call instead of ~200 (and ~45 µs of CPU instead of ~110). The loop waits with the
# GIL released, so the thread runs meanwhile. Only when this is the worker's one sync task in
# flight (a chain, a lone run: where the wake-up is latency): with several, the loop has other
# work, and handing the GIL back and forth per task cost more than it saved (syscalls per task
# in W2: futex 2.4 -> 14.8 when every task waited).
SHORT_WAIT_S = 0.0005
# A task that overran that wait is awaited the ordinary way for its next attempts: it is tried
# again only after this many, so a long task wastes the wait once in that many attempts.
_OVERRAN_SKIPS = 8


class Executor:
    """Calls task functions: async ones on the loop, sync ones on a thread pool (or on the loop
    when the task is `inline`), and knows how many threads are still busy (Python cannot
    interrupt one)."""

    def __init__(self, concurrency: int, short_wait_s: float = SHORT_WAIT_S) -> None:
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="conveyor")
        self._size = concurrency
        self._busy = 0
        self._calls = 0  # sync calls handed to the pool and not yet returned (loop side)
        self._lock = threading.Lock()
        self._short_wait_s = short_wait_s
        # Per task: attempts still to be awaited the ordinary way since one overran the wait.
        self._skips: dict[str, int] = {}

    @property
    def busy_threads(self) -> int:
        return self._busy

    def shutdown(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def call(
        self, task: Task[Any, Any], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        if task.inline:
            return _call_inline(task, kwargs, timeout)
        if task.is_async:
            running: Awaitable[Any] = task.fn(**kwargs)
        else:
            return await self._threaded(task, kwargs, timeout)
        if timeout is None:
            return await running
        return await asyncio.wait_for(running, timeout)

    async def _threaded(
        self, task: Task[Any, Any], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        context = contextvars.copy_context()  # so current() works in the thread too
        future = self._threads.submit(context.run, self._run_sync, task.fn, kwargs)
        self._calls += 1
        try:
            if self._ended_soon(task.name, future):
                return future.result()
            if timeout is None:
                return await asyncio.wrap_future(future)
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        finally:
            self._calls -= 1

    def _ended_soon(self, name: str, future: Future[Any]) -> bool:
        """Whether the thread ended the call within the short wait (not tried while other sync
        calls are in flight, for a task that overran it lately, nor when every thread is busy:
        the call would only queue)."""
        if self._calls > 1 or self._busy >= self._size:
            return False
        skips = self._skips.get(name, 0)
        if skips:
            self._skips[name] = skips - 1
            return False
        try:
            future.exception(timeout=self._short_wait_s)  # the task's own error is returned
        except FutureTimeout:
            self._skips[name] = _OVERRAN_SKIPS
            return False
        except FutureCancelled:  # shut down meanwhile: let the ordinary await say so
            return False
        return True

    def _run_sync(self, fn: Any, kwargs: dict[str, Any]) -> Any:
        with self._lock:
            self._busy += 1
        try:
            return fn(**kwargs)
        finally:
            with self._lock:
                self._busy -= 1


def _call_inline(task: Task[Any, Any], kwargs: dict[str, Any], timeout: float | None) -> Any:
    """On the loop, in the attempt's own context (so `current()` works). Nothing can interrupt
    it, so its timeout is judged when it returns: the same TimeoutError as a threaded attempt's,
    only later."""
    began = time.monotonic()
    output = task.fn(**kwargs)
    if timeout is not None and time.monotonic() - began > timeout:
        raise TimeoutError
    return output


async def perform(
    task: Task[Any, Any],
    dispatched: TaskDispatched,
    raw_input: Any,
    executor: Executor,
    context: TaskContext,
) -> Result:
    """Run the attempt; every way it can end, except a cancellation, is a Result."""
    try:
        kwargs = task.validate_input(raw_input)
    except pydantic.ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '<input>'}: {e['msg']}" for e in exc.errors()
        ]
        message = f"input of task {task.name!r} is invalid: " + "; ".join(problems)
        return Result(
            error=ErrorInfo(
                type="InputValidationError", message=message, retryable=False, details=problems
            )
        )
    token = _current.set(context)
    try:
        output = await executor.call(task, kwargs, dispatched.timeout)
    except TimeoutError:
        return Result(
            error=ErrorInfo(
                type="TimeoutError",
                message=f"task {task.name!r} did not finish within its "
                f"{dispatched.timeout}s timeout",
                retryable=True,
            )
        )
    except Exception as exc:  # the task's own failure: report it, typed
        return Result(error=error_info(exc, task))
    finally:
        # Lines the worker itself logs about this attempt are not the task's own output.
        _current.reset(token)
    try:
        payload = task.serialise_output(output)
        return Result(output=payload, encoded=_ANY.dump_json(payload))
    except Exception as exc:
        return Result(
            error=ErrorInfo(
                type="OutputSerialisationError",
                retryable=False,
                message=f"output of {task.name!r} cannot be serialised: {exc}",
            )
        )


def error_info(exc: BaseException, task: Task[Any, Any]) -> ErrorInfo:
    name = type(exc).__name__
    non_retryable = task.declaration.defaults.get("non_retryable") or ()
    return ErrorInfo(
        type=name,
        message=str(exc) or name,
        traceback="".join(traceback.format_exception(exc)),
        retryable=not isinstance(exc, NonRetryableError) and name not in non_retryable,
    )
