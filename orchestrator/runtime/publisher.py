"""The outbox, published: rows committed with a batch go out pipelined, and timers when due.

- `publish_now`: the rows of a just-committed batch that are due are sent at once, each with its
  deterministic `Nats-Msg-Id`; their acks are awaited off the engine's critical path (the next
  batch is applied while JetStream acknowledges this one). A row is deleted from the outbox only
  once acked — in the next commit, so deleting costs no transaction of its own.
- `flush_due`: rows whose time has come (timers), and whatever a failed publish or a previous
  life left behind, are published and deleted; a heap of due times tells the engine when to wake.

A publish that fails leaves its rows in the outbox and sets `backlog`: the engine flushes again
soon. Re-publishing a row is harmless (JetStream drops the duplicate id).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq

import structlog

from events.bus import Bus
from events.errors import BusClosed, BusError
from orchestrator.core.outbox import Batch
from orchestrator.runtime.metrics import EngineMetrics
from orchestrator.runtime.store import Store

log = structlog.get_logger("conveyor.outbox")
_FLUSH_PAGE = 1000


class OutboxPublisher:
    def __init__(self, bus: Bus, store: Store, metrics: EngineMetrics) -> None:
        self.bus = bus
        self.store = store
        self.metrics = metrics
        self.backlog = False
        self._timers: list[float] = []
        self._published: list[str] = []
        self._confirming = 0  # batches sent whose acks have not all come (or failed) yet
        self._confirmed = asyncio.Event()  # set whenever none are left

    @property
    def pending_timers(self) -> int:
        return len(self._timers)

    def next_due(self) -> float | None:
        return self._timers[0] if self._timers else None

    def flush_needed(self, now: float) -> bool:
        return self.backlog or (bool(self._timers) and self._timers[0] <= now)

    async def start(self, now: float) -> None:
        """Publish whatever a previous life committed but did not get to publish; then load the
        due times of the timers still waiting."""
        self.backlog = True
        await self.flush_due(now)
        self._timers = await self.store.timer_due_times(now)
        heapq.heapify(self._timers)

    async def drain(self) -> None:
        if self._confirming:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._confirmed.wait(), timeout=10)

    # ---- acked rows, deleted with the next commit ----------------------------------------
    def take_published(self) -> list[str]:
        taken, self._published = self._published, []
        return taken

    def give_back(self, ids: list[str]) -> None:
        """Rows taken for a commit that failed: delete them with a later one."""
        self._published = ids + self._published

    # ---- publishing ------------------------------------------------------------------------
    async def publish_now(self, batch: Batch, now: float) -> None:
        due = [row for row in batch.outbox.values() if row.due_at <= now]
        for row in batch.outbox.values():
            if row.due_at > now:
                heapq.heappush(self._timers, row.due_at)
        if not due:
            return
        ids = [r.id for r in due]
        self._confirming += 1
        self._confirmed.clear()
        try:
            # Its acks are counted by callbacks, off the engine's critical path (the next batch
            # is applied while JetStream acknowledges this one), with no task of their own.
            await self.bus.send_many_then(
                [(r.subject, r.headers, r.body) for r in due], lambda e: self._confirm(ids, e)
            )
        except BusError as exc:
            self._confirm(ids, exc)
            if isinstance(exc, BusClosed):
                raise

    def _confirm(self, ids: list[str], error: BusError | None) -> None:
        self._confirming -= 1
        if not self._confirming:
            self._confirmed.set()
        if error is not None:  # BusClosed included: the connection watch ends the process
            self._failed(error, len(ids))
            return
        self.metrics.outbox_published += len(ids)
        self._published.extend(ids)

    def _failed(self, exc: BusError, rows: int) -> None:
        # Committed rows stay in the outbox; the flush retries them (same ids: no duplicates).
        log.warning("outbox publish failed; will retry", rows=rows, error=str(exc))
        self.backlog = True

    async def flush_due(self, now: float) -> None:
        while self._timers and self._timers[0] <= now:
            heapq.heappop(self._timers)
        while True:
            rows = await self.store.due_outbox(now, limit=_FLUSH_PAGE)
            if not rows:
                self.backlog = False
                return
            try:
                await self.bus.publish_many([(r.subject, r.headers, r.body) for r in rows])
            except BusClosed:
                raise
            except BusError as exc:
                log.warning("outbox flush failed; will retry", rows=len(rows), error=str(exc))
                self.backlog = True
                return
            self.metrics.outbox_published += len(rows)
            await self.store.delete_outbox([r.id for r in rows] + self.take_published())
            if len(rows) < _FLUSH_PAGE:
                self.backlog = False
                return
