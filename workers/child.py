"""One attempt run alone in a child process: `python -m workers.child` (see `workers.isolation`).

The worker writes one JSON request on the child's stdin; the child finds the task by its address
(module, file, attribute), runs the attempt exactly as the worker would (`workers.attempt
.perform`: input validation, timeout, typed errors) and writes JSON lines on its stdout:

    {"started": true}                                         the task is found: it starts now
    {"log": {"level": ..., "message": ..., "logger": ...}}   a line the task logged or printed
    {"output": <JSON>}  |  {"error": {ErrorInfo}}             the attempt's result (last line)
    {"unavailable": "why"}                                    the task cannot be found here

Whatever the task itself writes to stdout goes to stderr (shared with the worker) instead, so it
can never be mistaken for a result. If the task kills the process (a segfault, `os._exit`, the
OOM killer), no result line comes: that is what the worker counts as a death.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
from types import ModuleType
from typing import IO, Any

from events.models import TaskDispatched
from workers.attempt import Executor, perform
from workers.context import TaskContext
from workers.logcapture import install_process_hooks
from workers.task import Task

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class _Channel:
    """The child's stdout, as the worker reads it: one JSON object per line, from any thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    # The log sink of the attempt's TaskContext (what LogCapture.emit is in the worker).
    def emit(self, context: TaskContext, level: str, message: str, logger: str | None) -> None:
        self.send({"log": {"level": level, "message": message, "logger": logger}})


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the worker dies (Linux), so no attempt outlives its worker
    and runs on where nothing reads its result."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the worker died before the call above: nothing to report to
        os._exit(1)


def _module(name: str, file: str | None) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except ImportError:
        if file is None:
            raise
    # Loaded from a path by the worker (`conveyor worker flows.py`): load it the same way.
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, os.path.dirname(file))  # as the worker did: its siblings import
    spec.loader.exec_module(module)
    return module


def _find(request: dict[str, Any]) -> Task[Any, Any]:
    sys.path[:] = [*request["path"], *(p for p in sys.path if p not in request["path"])]
    module = _module(request["module"], request.get("file"))
    found: Any = module
    for part in request["attribute"].split("."):
        found = getattr(found, part)
    if not isinstance(found, Task):
        raise ImportError(f"{request['module']}.{request['attribute']} is not a task")
    return found


def main() -> None:
    channel = _Channel(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)  # the task's own prints go where the worker's stderr goes, never to the channel
    request = json.loads(sys.stdin.buffer.read())
    _die_with_parent(int(request["parent"]))
    try:
        task = _find(request)
    except Exception as exc:  # import errors of any kind: the worker runs it in-process instead
        channel.send({"unavailable": f"{type(exc).__name__}: {exc}"})
        os._exit(0)
    dispatched = TaskDispatched.model_validate(request["dispatched"])
    context = TaskContext(
        dispatched.run_id,
        dispatched.node_id,
        dispatched.attempt,
        task.name,
        request["worker"],
        int(request["delivery"]),
        request.get("traceparent"),
        channel if request.get("capture_logs") else None,
    )
    if request.get("capture_logs"):
        install_process_hooks()
    channel.send({"started": True})
    result = asyncio.run(perform(task, dispatched, request["input"], Executor(1), context))
    if result.error is not None:
        channel.send({"error": result.error.model_dump(mode="json")})
    else:
        channel.send({"output": result.output})
    # At once: a sync task that timed out may still run in its thread, and must not keep the
    # process (or its result) waiting.
    os._exit(0)


if __name__ == "__main__":
    main()
