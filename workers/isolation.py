"""Running a suspect attempt alone, where it cannot take other attempts down with it.

A task message delivered more than once is a *suspect*: its previous delivery ended without a
result — its worker died (a segfault, `os._exit`, the OOM killer, kill -9), went silent, or
handed it back. A worker process runs many attempts at once, so the one that killed it cannot be
told from the ones that merely shared the process; every one of them comes back. From its second
delivery on, an attempt therefore runs *alone*:

- in a child process (`python -m workers.child`), found there by its address (module, file,
  attribute): the worker survives whatever the task does, keeps running its other attempts, and
  sees the death for what it is — the child ended without a result (`Died`);
- or, for a task a child process cannot find (one made inside a function, say), in the worker's
  own process with nothing else running there (`Solo`): the worker may die, but alone with it.

What the worker does with a death is the runtime's rule (`workers.runtime`): hand the message
back to be run alone again, until its deliveries are used up, then fail the attempt as
`WorkerLost`. The bystanders of the first crash, run alone on their second delivery, finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog

from events.models import ErrorInfo, TaskDispatched
from workers.attempt import Result
from workers.context import TaskContext
from workers.task import Task

log = structlog.get_logger("conveyor.worker")

_ANY: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Any)
# A result line holds the whole output (an output over the inline limit goes to the object
# store after it comes back): allow big lines.
_MAX_LINE = 256 * 1024 * 1024
# The child enforces the attempt's timeout itself; past it by this much, the worker kills it.
_TIMEOUT_GRACE_S = 10.0
_HINTS = {
    "SIGKILL": " (the out-of-memory killer, or kill -9?)",
    "SIGSEGV": " (a crash in native code?)",
    "SIGABRT": " (an abort in native code?)",
    "SIGBUS": " (a crash in native code?)",
}

LogSink = Callable[[str, str, "str | None"], None]  # (level, message, logger)


@dataclass(frozen=True, slots=True)
class TaskAddress:
    """Where a child process finds a task: `<module>.<attribute>`, loading `file` as `module`
    when it cannot be imported by name (a module the worker loaded from a path)."""

    module: str
    file: str | None
    attribute: str


@dataclass(frozen=True, slots=True)
class Died:
    """The child process ended without a result: the attempt took it down."""

    returncode: int

    def describe(self) -> str:
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"killed by {name}{_HINTS.get(name, '')}"
        return f"exit status {self.returncode}, without a result"


def address_of(task: Task[Any, Any]) -> TaskAddress | None:
    """The address of `task` (a module-level name in its function's module), or None when a
    child process could not find it by name (a task made inside a function)."""
    module = sys.modules.get(task.fn.__module__)
    if module is None:
        return None
    for attribute, value in vars(module).items():
        if value is task or (isinstance(value, Task) and value.fn is task.fn):
            file = getattr(module, "__file__", None)
            name = module.__name__
            if name == "__main__":  # a script: the child loads its file under another name
                if file is None:
                    return None
                name = "__conveyor_main__"
            return TaskAddress(name, file, attribute)
    return None


async def run_in_child(
    address: TaskAddress,
    dispatched: TaskDispatched,
    raw_input: Any,
    context: TaskContext,
    on_log: LogSink | None,
    *,
    on_start: Callable[[], Awaitable[None]],
) -> Result | Died | None:
    """Run the attempt in a child process: its Result, `Died` if the child ended without one,
    or None if the child could not find the task (the caller runs it another way). `on_start`
    is awaited once the child has found the task and starts it. Cancelled, it kills the child."""
    request = {
        "parent": os.getpid(),
        "path": sys.path,
        "module": address.module,
        "file": address.file,
        "attribute": address.attribute,
        "dispatched": dispatched.model_dump(mode="json"),
        "input": raw_input,
        "worker": context.worker,
        "delivery": context.delivery,
        "traceparent": context.traceparent,
        "capture_logs": on_log is not None,
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=_MAX_LINE,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps(request, default=str).encode())
        await child.stdin.drain()
        child.stdin.close()
        limit = None if dispatched.timeout is None else dispatched.timeout + _TIMEOUT_GRACE_S
        try:
            async with asyncio.timeout(limit):
                outcome = await _read_outcome(child.stdout, on_log, on_start)
        except TimeoutError:
            return Result(error=_timed_out(dispatched))
        returncode = await child.wait()
    finally:
        if child.returncode is None:  # cancelled, timed out, or the pipe broke: stop it
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
    if isinstance(outcome, str):
        log.warning("task cannot run in a child process", task=context.task, reason=outcome)
        return None
    return outcome if outcome is not None else Died(returncode)


async def _read_outcome(
    stdout: asyncio.StreamReader,
    on_log: LogSink | None,
    on_start: Callable[[], Awaitable[None]],
) -> Result | str | None:
    """The child's result, the reason it cannot run the task (str), or None at end of output
    without either (it died)."""
    async for line in stdout:
        try:
            message = json.loads(line)
        except ValueError:  # not written by the child's channel (native code on that fd?)
            continue
        if not isinstance(message, dict):
            continue
        if "started" in message:
            await on_start()
        elif "log" in message:
            if on_log is not None:
                entry = message["log"]
                on_log(entry["level"], entry["message"], entry.get("logger"))
        elif "output" in message:
            output = message["output"]
            return Result(output=output, encoded=_ANY.dump_json(output))
        elif "error" in message:
            return Result(error=ErrorInfo.model_validate(message["error"]))
        elif "unavailable" in message:
            return str(message["unavailable"])
    return None


def _timed_out(dispatched: TaskDispatched) -> ErrorInfo:
    return ErrorInfo(
        type="TimeoutError",
        message=f"task {dispatched.task!r} did not finish within its {dispatched.timeout}s "
        "timeout (run alone in a child process, which was killed)",
        retryable=True,
    )


class Solo:
    """The in-process way to run alone: ordinary attempts hold the process `shared`; one that
    must run `alone` waits until none runs, and none starts until it is done."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._running = 0
        self._waiting_alone = 0
        self._alone = False
        self._shared = _Shared(self)  # stateless: one for every attempt

    def shared(self) -> _Shared:
        """`async with solo.shared():` around an ordinary attempt."""
        return self._shared

    async def _enter_shared(self) -> None:
        # Without an attempt alone or waiting to be, no lock: nothing awaits between the check
        # and the count (one event loop), and nobody waits to be told (every attempt pays this).
        if self._alone or self._waiting_alone:
            async with self._changed:
                await self._changed.wait_for(lambda: not self._alone and not self._waiting_alone)
                self._running += 1
        else:
            self._running += 1

    async def _leave_shared(self) -> None:
        self._running -= 1
        if self._waiting_alone:  # only an attempt waiting to run alone waits for this
            async with self._changed:
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._changed:
            self._waiting_alone += 1
            try:
                await self._changed.wait_for(lambda: not self._alone and not self._running)
            finally:
                self._waiting_alone -= 1
                self._changed.notify_all()  # shared attempts held back by this one may go
            self._alone = True
        try:
            yield
        finally:
            async with self._changed:
                self._alone = False
                self._changed.notify_all()


class _Shared:
    """`Solo.shared()`: a plain context manager, not a generator one (every attempt enters it;
    `contextlib.asynccontextmanager` made a generator and a wrapper per attempt)."""

    __slots__ = ("_solo",)

    def __init__(self, solo: Solo) -> None:
        self._solo = solo

    async def __aenter__(self) -> None:
        await self._solo._enter_shared()

    async def __aexit__(self, *exc: object) -> None:
        await self._solo._leave_shared()
