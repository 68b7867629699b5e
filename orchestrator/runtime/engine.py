"""The imperative shell around the machine: fetch -> apply -> commit -> ack -> publish.

One loop per partition:

    1. fetch a batch of events from the durable consumer (whatever is there, up to N);
    2. apply them through the machine (`Applier`): decode (a malformed one will be parked), drop
       the ids already processed, load each run (hot runs are cached), advance it, stage the new
       state and the commands' outbox rows;
    3. commit the batch in one sqlite transaction: new states, processed ids, outbox rows (group
       commit) — after parking what cannot be applied and storing claim-checked payloads;
    4. ack the batch — only now, so a crash before the commit means a redelivery, and a
       redelivery after it is dropped by the processed-id check;
    5. publish the outbox rows pipelined, each with its deterministic `Nats-Msg-Id`
       (`OutboxPublisher`), and delete them once acked.

A batch whose application raises (a bug in a transition) may have left cached runs half
changed: they are forgotten and its events applied again one by one, the one that fails parked.
Timers are outbox rows due in the future; the loop wakes when the next one is due.

A projection (`projection=True`) applies the same events with the same machine into its own
store, for the API and dashboard to read; it publishes nothing and parks nothing. It reads every
partition's events in stream order through an ordered consumer from the position it committed
last (stored in the same transaction as what it applied), so each API replica keeps its own
complete copy — a fresh database is rebuilt from the stream, and replicas never split events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from events.acks import Outcome
from events.bus import ORCHESTRATOR_ACK_WAIT_S, Bus, Delivery, KeptAlive, settle_quietly
from events.consuming import Fetcher
from events.dlq import park
from events.errors import BusClosed, BusError
from orchestrator.errors import StoreError
from orchestrator.runtime.applier import Applied, Applier, Item
from orchestrator.runtime.metrics import EngineMetrics
from orchestrator.runtime.publisher import OutboxPublisher
from orchestrator.runtime.store import Store

if TYPE_CHECKING:
    from orchestrator.runtime.otel import RunTracing

log = structlog.get_logger("conveyor.engine")
_RETRY_PAUSE_S = 0.5
_EVENTS = "events"  # the projection's position in the event stream


class Engine:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        partition: int = 0,
        clock: Callable[[], float] = time.time,
        batch_size: int = 256,
        cache_size: int = 10_000,
        projection: bool = False,
        tracing: RunTracing | None = None,
    ) -> None:
        self.bus = bus
        # OpenTelemetry spans of what each batch committed (None: off, the default).
        self.tracing = tracing
        self.store = store
        self.topology = bus.topology
        self.partition = partition
        self.clock = clock
        self.batch_size = batch_size
        self.projection = projection
        self.name = "projection" if projection else f"engine-p{partition}"
        self.metrics = EngineMetrics()
        self.applier = Applier(
            bus,
            store,
            self.metrics,
            projection=projection,
            cache_size=cache_size,
            partition=partition,
        )
        self.outbox = OutboxPublisher(bus, store, self.metrics)
        self._fetcher: Fetcher | None = None
        self._stopping = asyncio.Event()

    # ---- lifecycle (runtime.supervisor.Component) -----------------------------------------
    async def start(self) -> None:
        if self.projection:
            start = await self.store.position(_EVENTS) + 1
            self._fetcher = Fetcher(await self.bus.event_reader(start), self.name)
        else:
            puller = await self.bus.orchestrator_puller(self.partition)
            self._fetcher = Fetcher(puller, self.name)
        if not self.projection:
            await self.outbox.start(self.clock())
        log.info("engine started", engine=self.name, timers=self.outbox.pending_timers)

    async def run(self) -> None:
        """Apply events until `stop()`."""
        if self._fetcher is None:
            await self.start()
        while not self._stopping.is_set():
            try:
                await self.step()
            except BusClosed:
                raise
            except (BusError, StoreError) as exc:
                # Nothing was acked for the failed batch: it will be redelivered.
                log.warning("engine step failed; retrying", engine=self.name, error=str(exc))
                await asyncio.sleep(_RETRY_PAUSE_S)

    def stop(self) -> None:
        self._stopping.set()

    async def drain(self) -> None:
        await self.outbox.drain()
        if published := self.outbox.take_published():
            # Acked rows go now rather than with a next commit that will not come: whoever
            # opens this store next (a restart, a lease-mode successor) need not send them again.
            with contextlib.suppress(StoreError):
                await self.store.delete_outbox(published)
        if self._fetcher is not None:
            await self._fetcher.close()
            self._fetcher = None

    # ---- one iteration ---------------------------------------------------------------------
    async def step(self, max_wait: float = 1.0) -> int:
        """Fetch (waiting at most until the next timer), apply, flush due timers."""
        assert self._fetcher is not None, "call start() first"
        deliveries = await self._fetcher.fetch(self.batch_size, timeout=self._wait(max_wait))
        if deliveries:
            # A batch that takes longer than the consumer's short ack wait (a 100k fan-out
            # commit) keeps its messages: in_progress() until they are settled.
            with KeptAlive(deliveries, ORCHESTRATOR_ACK_WAIT_S / 4):
                await self._process(deliveries)
        elif published := self.outbox.take_published():
            await self.store.delete_outbox(published)
        if not self.projection and self.outbox.flush_needed(self.clock()):
            await self.outbox.flush_due(self.clock())
        return len(deliveries)

    def _wait(self, max_wait: float) -> float:
        wait = max_wait
        due = self.outbox.next_due()
        if due is not None:
            wait = min(wait, max(0.0, due - self.clock()))
        if self.outbox.backlog:
            wait = min(wait, 0.2)
        return max(wait, 0.01)

    async def _process(self, deliveries: Sequence[Delivery]) -> None:
        items = await self.applier.prepare(deliveries)
        now = self.clock()  # when the batch is handled (spans, what is due); events carry theirs
        started = time.perf_counter()
        try:
            applied = await self.applier.apply(items)
        except Exception:
            # A bug in a transition may have left a cached run half-changed: forget every run
            # this batch touched and apply its events one at a time, parking the one that fails.
            self.applier.forget_touched()
            log.exception("batch failed; re-applying its events one at a time", engine=self.name)
            for item in items:
                single = await self.applier.apply([item], isolated=True)
                await self._commit([item], single, now, started, item.delivery.stream_seq)
            return
        await self._commit(items, applied, now, started, max(d.stream_seq for d in deliveries))

    async def _commit(
        self,
        items: list[Item],
        applied: Applied,
        now: float,
        started: float,
        position: int | None = None,
    ) -> None:
        batch = applied.batch
        batch.outbox_deleted = self.outbox.take_published()
        if self.projection and position is not None:
            batch.positions[_EVENTS] = position
        parked = [i for i in items if i.problem is not None]
        try:
            # Claim-checked payloads exist before any committed outbox row can refer to them.
            for payload in batch.artifacts.values():
                await self.bus.put_artifact(payload)
            if not self.projection:  # the orchestrator parks; a projection only skips
                for item in parked:
                    await park(self.bus, item.delivery, "orchestrator", item.problem or "")
                    self.metrics.events["parked"] += 1
            await self.store.commit(batch)
        except (StoreError, BusError):
            self.applier.cache.forget(applied.touched)
            self.applier.flows.forget(applied.touched_flows)
            self.applier.clock.forget()
            self.outbox.give_back(batch.outbox_deleted)
            for item in items:
                await settle_quietly(item.delivery, Outcome.TRANSIENT)
            raise
        for item in items:
            await settle_quietly(
                item.delivery, Outcome.DONE if item.problem is None else Outcome.PARKED
            )
        self._observe(applied, time.perf_counter() - started)
        if self.tracing is not None:
            await self.tracing.record(applied.transitions, applied.times, now, self.clock())
        self.applier.cache.forget_finished(applied.touched)
        if not self.projection:
            # Rows due at their event's time go now, even if the stream's clock is ahead of ours.
            await self.outbox.publish_now(batch, max(now, applied.now))

    def _observe(self, applied: Applied, elapsed: float) -> None:
        for transition, data in applied.transitions:
            self.metrics.events["applied"] += 1
            self.metrics.observe(transition, data)
            self.metrics.transition_seconds.observe(elapsed / len(applied.transitions))
        for flow in applied.flows:
            self.metrics.events["applied"] += 1
            self.metrics.observe_flow(flow)

    # ---- reads for the API and gauges ------------------------------------------------------
    @property
    def cached_runs(self) -> int:
        return len(self.applier.cache)

    @property
    def pending_timers(self) -> int:
        return self.outbox.pending_timers

    async def refresh_gauges(self) -> None:
        """Queue depths and DLQ size: asked of JetStream, so refreshed now and then, not per
        scrape (the scrape runs in another thread)."""
        with contextlib.suppress(BusError):
            self.metrics.queue_depth.update(await self.bus.queue_depths())
            self.metrics.dlq_messages = await self.bus.stream_size(self.topology.dlq_stream)
        with contextlib.suppress(StoreError):
            self.metrics.flows = await self.store.active_flows()
