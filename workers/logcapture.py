"""Capture what a task logs — `logging`, structlog, `print` — and publish it as task log lines.

A task's lines are published on `<ns>.log.<run_id>.<node_id>` (the LOGS stream) as JSON
`LogLine`s tagged with run, node and attempt, so the API, the dashboard and `conveyor logs`
can show them while the task runs. Output still reaches the worker's own stdout/stderr, so
container logs keep working.

Which task a line belongs to comes from `workers.context` (a context variable the runtime sets
for each attempt, copied into the thread of a sync task): lines written outside a task are not
captured. Publishing is core NATS, batched by a flusher task on the event loop: a log line is
never worth slowing a task down or failing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from events.models import LogLine
from workers.context import TaskContext, _current

if TYPE_CHECKING:  # a child process that runs one attempt needs the hooks, not nats-py
    from events.bus import Bus

_MAX_LINE = 16 * 1024
_MAX_QUEUED = 50_000


class _ProcessHooks:
    """The logging handler and stdout/stderr tees, installed once per process however many
    workers run in it (each line is routed by its task's context to that worker's capture)."""

    def __init__(self) -> None:
        self.users = 0
        self.lock = threading.Lock()
        self.handler: _TaskLogHandler | None = None
        self.stdout: TextIO | None = None
        self.stderr: TextIO | None = None

    def acquire(self) -> None:
        with self.lock:
            self.users += 1
            if self.users > 1:
                return
            self.handler = _TaskLogHandler()
            logging.getLogger().addHandler(self.handler)
            self.stdout, self.stderr = sys.stdout, sys.stderr
            sys.stdout = _TeeStream(self.stdout, "info", "stdout")
            sys.stderr = _TeeStream(self.stderr, "error", "stderr")

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users > 0:
                return
            if self.handler is not None:
                logging.getLogger().removeHandler(self.handler)
            if isinstance(sys.stdout, _TeeStream) and self.stdout is not None:
                sys.stdout = self.stdout
            if isinstance(sys.stderr, _TeeStream) and self.stderr is not None:
                sys.stderr = self.stderr


_hooks = _ProcessHooks()


def install_process_hooks() -> None:
    """Route what runs under a task's context (logging, print) to its context's log sink, for
    the life of the process (a child process that runs one attempt, see `workers.child`)."""
    _hooks.acquire()


class LogCapture:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=_MAX_QUEUED)
        self._flusher: asyncio.Task[None] | None = None
        self._thread_id: int | None = None
        self.dropped = 0

    def install(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        _hooks.acquire()
        self._flusher = asyncio.create_task(self._flush_forever())

    async def uninstall(self) -> None:
        _hooks.release()
        if self._flusher is not None:
            await self._drain_queue()
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    def emit(self, context: TaskContext, level: str, message: str, logger: str | None) -> None:
        """Queue one line; safe from any thread."""
        line = LogLine(
            run_id=context.run_id,
            node_id=context.node_id,
            attempt=context.attempt,
            time=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            level=level,
            message=message[:_MAX_LINE],
            logger=logger,
            traceparent=context.traceparent,
        )
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._thread_id:
            self._put(line)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closing: drop the line
                loop.call_soon_threadsafe(self._put, line)

    def _put(self, line: LogLine) -> None:
        try:
            self._queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1  # a task printing in a tight loop must not eat the worker's memory

    async def _flush_forever(self) -> None:
        while True:
            line = await self._queue.get()
            await self._publish(line)
            while not self._queue.empty():
                await self._publish(self._queue.get_nowait())

    async def _drain_queue(self) -> None:
        while not self._queue.empty():
            await self._publish(self._queue.get_nowait())
        await self.bus.flush()

    async def _publish(self, line: LogLine) -> None:
        subject = self.bus.topology.log_subject(line.run_id, line.node_id)
        await self.bus.publish_core(subject, line.model_dump_json().encode())


def structlog_processor(logger: Any, method_name: str, event_dict: Any) -> Any:
    """A structlog processor copying lines logged inside a task into the task's log.

    `conveyor worker` and `conveyor dev` install it; add it to your own structlog configuration
    (before the renderer) if you configure structlog yourself."""
    context = _current.get()
    if context is not None and context.log_sink is not None:
        fields = " ".join(
            f"{k}={v}" for k, v in event_dict.items() if k not in ("event", "level", "timestamp")
        )
        message = f"{event_dict.get('event', '')} {fields}".strip()
        level = "warning" if method_name == "warn" else method_name
        context.log_sink.emit(context, level, message, event_dict.get("logger"))
    return event_dict


class _TaskLogHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        context = _current.get()
        if context is None or context.log_sink is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a broken format string must not break the task
            message = str(record.msg)
        context.log_sink.emit(context, record.levelname.lower(), message, record.name)


class _TeeStream:
    """A stdout/stderr stand-in: writes through, and turns a task's lines into log lines."""

    def __init__(self, target: TextIO, level: str, name: str) -> None:
        self._target = target
        self._level = level
        self._name = name
        self._partial = threading.local()

    def write(self, text: str) -> int:
        written = self._target.write(text)
        context = _current.get()
        if context is not None and context.log_sink is not None and text:
            buffered = getattr(self._partial, "text", "") + text
            *lines, rest = buffered.split("\n")
            self._partial.text = rest
            for line in lines:
                if line.strip():
                    context.log_sink.emit(context, self._level, line, self._name)
        return written

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)
