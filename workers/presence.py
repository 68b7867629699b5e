"""A worker announcing itself: `io.conveyor.worker.heartbeat` on `<ns>.worker.<worker id>`.

Every `CONVEYOR_WORKER_HEARTBEAT` seconds (5 by default) and on each change of state: who the
worker is, which tasks it serves on which queues, how busy it is. The stream keeps the last
heartbeat of each worker, so the orchestrator can tell a task that waits its turn from one no
running worker serves (`orchestrator.runtime.workers`). On a graceful exit the last word is
`state: "stopped"`; a killed worker just falls silent and is counted as gone after a few missed
beats. A heartbeat that cannot be published is logged and skipped: it is never worth failing
or slowing a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

import structlog

from events.bus import Bus
from events.envelope import CloudEvent
from events.errors import BusError
from events.models import WORKER_HEARTBEAT, ServedTask, WorkerHeartbeat

log = structlog.get_logger("conveyor.worker")

State = Literal["running", "draining", "stopped"]


@dataclass(frozen=True, slots=True)
class Load:
    in_flight: int
    isolated: int


def sdk_version() -> str:
    try:
        return f"conveyor-python {metadata.version('conveyor')}"
    except metadata.PackageNotFoundError:
        return "conveyor-python (not installed)"


class Presence:
    def __init__(
        self,
        bus: Bus,
        worker: str,
        serves: list[tuple[str, str]],
        concurrency: int,
        load: Callable[[], Load],
    ) -> None:
        self.bus = bus
        self.worker = worker
        self.serves = [ServedTask(queue=q, task=t) for q, t in serves]
        self.concurrency = concurrency
        self.load = load
        self.interval_s = bus.topology.worker_heartbeat_s
        self.started_at = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        self.beats = 0
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The first heartbeat (before the worker takes anything), then one every interval."""
        await self.announce("running")
        self._loop = asyncio.create_task(self._every_interval())

    async def stop(self) -> None:
        """The last heartbeat: gone on purpose, not lost."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        await self.announce("stopped")

    async def announce(self, state: State) -> None:
        load = self.load()
        beat = WorkerHeartbeat(
            worker=self.worker,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=sdk_version(),
            serves=self.serves,
            concurrency=self.concurrency,
            in_flight=load.in_flight,
            isolated=load.isolated,
            started_at=self.started_at,
            interval_s=self.interval_s,
            state=state,
        )
        self.beats += 1
        event = CloudEvent.create(
            WORKER_HEARTBEAT,
            f"conveyor/worker/{self.worker}",
            beat,
            id=f"{self.worker}:heartbeat:{self.beats}",
        )
        try:
            await self.bus.publish(self.bus.topology.worker_subject(self.worker), event)
        except BusError as exc:  # closed for good too: the connection watch ends the process
            log.warning("heartbeat not published", worker=self.worker, error=str(exc))

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.announce("running")
