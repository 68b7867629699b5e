"""What an owned partition runs beside its own components (lease mode, `runtime.owned`): a
guard that turns a fence's refusal into the loss of the partition, the catch-up that holds the
router, notifier and scheduler back until the engine has replayed the stream's tail, and the
snapshot loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from events.bus import Bus
from events.errors import BusError, BusUnavailable, Deposed
from orchestrator.runtime.supervisor import Component

if TYPE_CHECKING:
    from orchestrator.runtime.owned import OwnedPartition

log = structlog.get_logger("conveyor.ownership")
_CATCH_UP_POLL_S = 0.1


class Fenced:
    """A partition component whose write refused by the fence ends the partition, not the
    process: the replica stops owning it."""

    def __init__(self, inner: Component, owned: OwnedPartition) -> None:
        self.inner = inner
        self.owned = owned
        self.name = inner.name

    async def start(self) -> None:
        await self.inner.start()

    async def run(self) -> None:
        try:
            await self.inner.run()
        except Deposed as exc:
            self.owned.lose(f"{self.name}: {exc}")

    def stop(self) -> None:
        self.inner.stop()

    async def drain(self) -> None:
        await self.inner.drain()


class CatchUp:
    """Sets `caught_up` once the engine's consumer has acked past `head` (the stream's last
    sequence at takeover) or has nothing left: the replay of the tail is done."""

    def __init__(self, bus: Bus, consumer: str, head: int, caught_up: asyncio.Event) -> None:
        self.bus = bus
        self.consumer = consumer
        self.head = head
        self.caught_up = caught_up
        self.name = "catch-up"
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        stream = self.bus.topology.events_stream
        while not self._stopped.is_set() and not self.caught_up.is_set():
            with contextlib.suppress(BusUnavailable):
                state = await self.bus.consumer_state(stream, self.consumer)
                if state.ack_floor >= self.head or state.pending == 0:
                    self.caught_up.set()
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), _CATCH_UP_POLL_S)
        await self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()

    async def drain(self) -> None:
        pass


class AfterCatchUp:
    """A component started only once the engine has caught up (see `_CatchUp`)."""

    def __init__(self, inner: Component, caught_up: asyncio.Event) -> None:
        self.inner = inner
        self.caught_up = caught_up
        self.name = inner.name
        self._stopped = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        if not await _first(self.caught_up, self._stopped):
            return
        await self.inner.start()
        self._started = True
        if self._stopped.is_set():
            self.inner.stop()
        await self.inner.run()

    def stop(self) -> None:
        self._stopped.set()
        if self._started:
            self.inner.stop()

    async def drain(self) -> None:
        if self._started:
            await self.inner.drain()


class SnapshotLoop:
    """Every `snapshot_interval_s`, when the engine applied anything since the last one: a
    snapshot, recorded as the partition's newest. A failure is logged and tried again next
    time (the lease is the rounds' business: a lost one stops this loop with the rest)."""

    def __init__(self, owned: OwnedPartition) -> None:
        self.owned = owned
        self.name = f"snapshots-p{owned.partition}"
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        owned = self.owned
        interval = owned.ctx.snapshot_interval_s
        applied = _applied(owned)
        while not await _stopped_within(self._stopped, interval):
            if _applied(owned) == applied:
                continue
            try:
                await owned.snapshot()
                applied = _applied(owned)
            except (BusError, OSError) as exc:
                log.warning(
                    "snapshot failed; will try again", partition=owned.partition, error=str(exc)
                )

    def stop(self) -> None:
        self._stopped.set()

    async def drain(self) -> None:
        pass


def _applied(owned: OwnedPartition) -> int:
    return sum(owned.engine.metrics.events.values()) if owned.engine is not None else 0


async def _first(wanted: asyncio.Event, stopped: asyncio.Event) -> bool:
    """Wait for `wanted` or `stopped`; whether `wanted` came (and no stop)."""
    waits: Sequence[asyncio.Task[bool]] = [
        asyncio.ensure_future(wanted.wait()),
        asyncio.ensure_future(stopped.wait()),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return wanted.is_set() and not stopped.is_set()


async def _stopped_within(stopped: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopped.wait(), seconds)
    return stopped.is_set()
