"""The imperative shell around the machine: fetch -> advance -> commit -> ack -> publish.

One loop per partition:

    1. fetch a batch of events from the durable consumer (whatever is there, up to N);
    2. decode each (a malformed one is parked on the DLQ with its reason), drop the ids already
       processed, load each run (hot runs are cached), and `advance` it;
    3. commit the batch in one sqlite transaction: new states, processed ids, outbox rows
       (group commit);
    4. ack the batch — only now, so a crash before the commit means a redelivery, and a
       redelivery after it is dropped by the processed-id check;
    5. publish the outbox rows pipelined, each with its deterministic `Nats-Msg-Id` (so a
       re-publish after a crash is dropped by JetStream), and delete them once acked.

Timers are outbox rows due in the future; a heap of due times tells the loop when to wake.
At start-up the engine publishes whatever the outbox still holds and reloads the due times.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from events.acks import Outcome
from events.bus import ORCHESTRATOR_ACK_WAIT_S, Bus, Delivery, Puller
from events.codec import MSG_ID_HEADER, decode, encode
from events.envelope import CloudEvent
from events.errors import BusError, BusUnavailable, MalformedEvent
from events.ids import artifact_key, is_token
from events.models import (
    DATA_MODELS,
    INLINE_LIMIT_BYTES,
    RUN_REQUESTED,
    TASK_DISPATCHED,
    TASK_FAILED,
    TIMER_FIRED,
    ErrorInfo,
    ParentRef,
    RunRequested,
    TaskCompleted,
    TaskDispatched,
    TaskFailed,
    TimerFired,
    WireModel,
    requested_run_id,
)
from events.topology import ORCHESTRATOR_INPUTS
from events.tracing import child_traceparent, is_traceparent, new_traceparent
from orchestrator.core.commands import (
    CancelTimer,
    CancelWait,
    Command,
    Dispatch,
    Emit,
    StartChild,
    StartTimer,
    StartWait,
)
from orchestrator.core.machine import advance, start_run
from orchestrator.core.state import RunState, Transition
from orchestrator.core.statuses import RUN_TERMINAL
from orchestrator.errors import EventRejected, SpecError, StoreError, UnknownWorkflow
from orchestrator.runtime.metrics import EngineMetrics
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.store import Batch, OutboxRow, Store, Wait

log = structlog.get_logger("conveyor.engine")
SOURCE = "conveyor/orchestrator"
_MAX_PARK_REASON = 1000


@dataclass(slots=True)
class _Item:
    delivery: Delivery
    event: CloudEvent | None = None
    data: WireModel | None = None
    problem: str | None = None


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
    ) -> None:
        self.bus = bus
        self.store = store
        self.topology = bus.topology
        self.partition = partition
        self.clock = clock
        self.batch_size = batch_size
        self.registry = Registry(bus)
        # A projection applies the same events with the same machine into its own store, for
        # the API and dashboard to read; it publishes nothing (no outbox, no timers, no DLQ).
        self.projection = projection
        self.metrics = EngineMetrics()
        self._cache: OrderedDict[str, RunState] = OrderedDict()
        self._cache_size = cache_size
        self._timers: list[float] = []
        self._published: list[str] = []
        self._outbox_backlog = False
        self._confirming: set[asyncio.Task[None]] = set()
        self._puller: Puller | None = None
        self._stopping = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.bus.ensure_topology()
        self._puller = await self.bus.orchestrator_puller(self.partition, self.projection)
        if self.projection:
            log.info("projection started", partition=self.partition)
            return
        # Whatever a previous life committed but did not get to publish goes out first.
        now = self.clock()
        self._outbox_backlog = True
        await self._flush_due(now)
        self._timers = await self.store.timer_due_times(now)
        heapq.heapify(self._timers)
        log.info("engine started", partition=self.partition, timers=len(self._timers))

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Apply events until `stop()`."""
        if self._puller is None:
            await self.start()
        while not self._stopping.is_set():
            try:
                await self.step()
            except (BusError, StoreError) as exc:
                # Nothing was acked for the failed batch: it will be redelivered.
                log.warning("engine step failed; retrying", error=str(exc))
                await asyncio.sleep(0.5)
        if self._confirming:
            await asyncio.wait(set(self._confirming), timeout=10)
        await self._puller.close() if self._puller else None

    async def step(self, max_wait: float = 1.0) -> int:
        """One iteration: fetch (waiting at most until the next timer), apply, flush timers."""
        assert self._puller is not None, "call start() first"
        now = self.clock()
        wait = max_wait
        if self._timers:
            wait = min(wait, max(0.0, self._timers[0] - now))
        if self._outbox_backlog:
            wait = min(wait, 0.2)
        deliveries = await self._puller.fetch(self.batch_size, timeout=max(wait, 0.01))
        if deliveries:
            # A batch that takes longer than the consumer's short ack wait (a 100k fan-out
            # commit) keeps its messages: in_progress() until they are settled.
            keepalive = asyncio.create_task(_keep_alive(deliveries))
            try:
                await self._process(deliveries)
            finally:
                keepalive.cancel()
        elif self._published:
            await self.store.delete_outbox(self._take_published())
        if self.projection:
            return len(deliveries)
        if self._outbox_backlog or (self._timers and self._timers[0] <= self.clock()):
            await self._flush_due(self.clock())
        return len(deliveries)

    # ---- a batch -----------------------------------------------------------------------
    async def _process(self, deliveries: Sequence[Delivery], isolated: bool = False) -> None:
        items = [self._decode(d) for d in deliveries]
        for item in items:
            await self._resolve_claim_check(item)
        now = self.clock()
        seen = await self.store.already_processed(
            [i.event.id for i in items if i.event is not None and i.problem is None]
        )
        batch = Batch(outbox_deleted=self._take_published())
        touched: set[str] = set()
        applied: list[tuple[Transition, WireModel | None]] = []
        started = time.perf_counter()
        try:
            for item in items:
                if item.problem is not None or item.event is None:
                    continue
                if item.event.id in seen:
                    self.metrics.events["duplicate"] += 1
                    continue
                seen.add(item.event.id)
                try:
                    transition = await self._apply(item.event, item.data, now)
                except (EventRejected, UnknownWorkflow, SpecError) as exc:
                    item.problem = str(exc)
                    continue
                except Exception as exc:
                    if not isolated:
                        raise
                    log.exception(
                        "internal error applying an event; parked", event_id=item.event.id
                    )
                    item.problem = f"internal error applying event: {type(exc).__name__}: {exc}"
                    if (run_id := _run_id_of(item.data)) is not None:
                        self._cache.pop(run_id, None)
                    continue
                batch.processed.append(item.event.id)
                if transition.applied:
                    trace = None
                    if transition.run is not None:
                        touched.add(transition.run.run_id)
                        batch.stage_run(transition.run, transition.changed)
                        trace = transition.run.traceparent
                    if not self.projection:
                        self._stage_commands(batch, transition.commands, now, trace)
                    applied.append((transition, item.data))
                else:
                    self.metrics.events["stale"] += 1
        except Exception:
            # A bug in a transition may have left a cached run half-changed: forget every run
            # this batch touched and apply its events one by one, parking the one that fails.
            for run_id in touched | {r for i in items if (r := _item_run_id(i))}:
                self._cache.pop(run_id, None)
            self._published = batch.outbox_deleted + self._published
            log.exception("batch failed; re-applying its events one at a time")
            for delivery in deliveries:
                await self._process([delivery], isolated=True)
            return

        parked = [i for i in items if i.problem is not None]
        try:
            # Claim-checked payloads exist before any committed outbox row can refer to them.
            for payload in batch.artifacts.values():
                await self.bus.put_artifact(payload)
            for item in parked:
                if not self.projection:  # the orchestrator parks it; a projection only skips
                    await self._park(item)
            await self.store.commit(batch)
        except (StoreError, BusError):
            for run_id in touched:
                self._cache.pop(run_id, None)
            self._published = batch.outbox_deleted + self._published
            for item in items:
                await _settle_quietly(item.delivery, Outcome.TRANSIENT)
            raise
        for item in items:
            await _settle_quietly(
                item.delivery, Outcome.DONE if item.problem is None else Outcome.PARKED
            )
        elapsed = time.perf_counter() - started
        for transition, data in applied:
            self.metrics.events["applied"] += 1
            self.metrics.observe(transition, data)
            self.metrics.transition_seconds.observe(elapsed / len(applied))
        self._forget_finished(touched)
        await self._publish_now(batch, now)

    async def _resolve_claim_check(self, item: _Item) -> None:
        """A result that came by claim check is applied with its output in hand: the machine
        stays pure, and the run's state holds the value itself."""
        data = item.data
        if not isinstance(data, TaskCompleted) or data.output_ref is None:
            return
        try:
            raw = await self.bus.get_artifact(data.output_ref)
            output = json.loads(raw)
        except BusUnavailable:
            raise  # the batch is retried
        except (BusError, ValueError) as exc:
            item.problem = f"output artifact of {data.node_id!r}: {exc}"
            return
        item.data = data.model_copy(update={"output": output, "output_ref": None})

    def _decode(self, delivery: Delivery) -> _Item:
        item = _Item(delivery)
        try:
            item.event = decode(delivery.headers, delivery.data)
            model = DATA_MODELS.get(item.event.type)
            if model is None or item.event.type not in ORCHESTRATOR_INPUTS:
                raise MalformedEvent(
                    f"event {item.event.id!r}: type {item.event.type!r} is not one the "
                    "orchestrator applies"
                )
            item.data = item.event.data_as(model)
        except MalformedEvent as exc:
            item.problem = exc.reason
            self.metrics.events["malformed"] += 1
        return item

    async def _apply(self, event: CloudEvent, data: WireModel | None, now: float) -> Transition:
        if isinstance(data, RunRequested):
            run_id = requested_run_id(data, event.source, event.id)
            if not is_token(run_id):
                raise EventRejected(f"run_id {run_id!r} must be 1-128 of [A-Za-z0-9_-]")
            existing = await self._load(run_id)
            if existing is not None:  # same idempotency key, or the same request again
                return Transition(existing, applied=False)
            try:
                spec = await self.registry.get(data.workflow, data.version)
            except UnknownWorkflow as exc:
                if data.parent is None:
                    raise
                return _child_cannot_start(data.parent, run_id, exc)
            transition = start_run(spec, run_id, data, now)
            assert transition.run is not None
            # The trace is envelope metadata, not workflow data: the shell carries it.
            caller = event.extensions.get("traceparent")
            transition.run.traceparent = caller if is_traceparent(caller) else new_traceparent()
            self._remember(transition.run)
            log.info("run started", run_id=run_id, workflow=spec.name, version=spec.version)
            return transition
        target = _run_id_of(data)
        assert target is not None
        run_id = target
        run = await self._load(run_id)
        if run is None:
            raise EventRejected(f"event {event.id!r} ({event.type}) is for unknown run {run_id!r}")
        spec = await self.registry.get(run.workflow, run.version)
        before = run.status
        transition = advance(spec, run, data, now)  # type: ignore[arg-type]
        if run.status != before and run.status in RUN_TERMINAL:
            log.info("run finished", run_id=run_id, status=run.status)
        return transition

    async def _load(self, run_id: str) -> RunState | None:
        run = self._cache.get(run_id)
        if run is not None:
            self._cache.move_to_end(run_id)
            return run
        run = await self.store.load_run(run_id)
        if run is not None:
            self._remember(run)
        return run

    def _remember(self, run: RunState) -> None:
        self._cache[run.run_id] = run
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _forget_finished(self, run_ids: set[str]) -> None:
        for run_id in run_ids:
            run = self._cache.get(run_id)
            if run is not None and run.status in RUN_TERMINAL:
                del self._cache[run_id]

    # ---- commands -> outbox ------------------------------------------------------------
    def _stage_commands(
        self, batch: Batch, commands: list[Command], now: float, trace: str | None
    ) -> None:
        topo = self.topology
        for command in commands:
            if isinstance(command, Dispatch):
                data = TaskDispatched(
                    run_id=command.run_id,
                    node_id=command.node_key,
                    attempt=command.attempt,
                    task=command.task,
                    queue=command.queue,
                    input=command.input,
                    timeout=command.timeout_s,
                )
                encoded = data.model_dump_json().encode()
                if len(encoded) > INLINE_LIMIT_BYTES:
                    # A fan-in over thousands of outputs: the input goes by claim check.
                    payload = json.dumps(command.input, separators=(",", ":")).encode()
                    key = artifact_key(payload)
                    batch.artifacts[key] = payload
                    data = data.model_copy(update={"input": {}, "input_ref": key})
                event_id = f"{command.run_id}:{command.node_key}:{command.attempt}:dispatch"
                batch.add_outbox(
                    _row(
                        topo.task_subject(command.queue),
                        TASK_DISPATCHED,
                        event_id,
                        data,
                        now,
                        command.run_id,
                        trace and child_traceparent(trace, command.node_key, str(command.attempt)),
                    )
                )
            elif isinstance(command, StartTimer):
                fired = TimerFired(
                    run_id=command.run_id,
                    timer_id=command.timer_id,
                    kind=command.kind,
                    node_id=command.node_key,
                    attempt=command.attempt,
                )
                batch.add_outbox(
                    _row(
                        topo.event_subject(TIMER_FIRED, command.run_id),
                        TIMER_FIRED,
                        command.timer_id,
                        fired,
                        command.due_at,
                        command.run_id,
                        trace,
                    )
                )
            elif isinstance(command, CancelTimer):
                batch.cancel_outbox(command.timer_id)
            elif isinstance(command, StartWait):
                batch.waits[(command.run_id, command.node_key)] = Wait(
                    command.run_id, command.node_key, command.attempt, command.type, command.match
                )
            elif isinstance(command, CancelWait):
                batch.waits[(command.run_id, command.node_key)] = None
            elif isinstance(command, StartChild):
                request = RunRequested(
                    workflow=command.workflow,
                    version=command.version,
                    input=command.input if isinstance(command.input, dict) else {},
                    run_id=command.child_run_id,
                    parent=ParentRef(
                        run_id=command.run_id, node_id=command.node_key, attempt=command.attempt
                    ),
                )
                batch.add_outbox(
                    _row(
                        topo.event_subject(RUN_REQUESTED, command.child_run_id),
                        RUN_REQUESTED,
                        f"{command.child_run_id}:requested",
                        request,
                        now,
                        command.child_run_id,
                        trace and child_traceparent(trace, command.node_key, str(command.attempt)),
                    )
                )
            elif isinstance(command, Emit):
                batch.add_outbox(
                    _row(
                        topo.event_subject(command.event_type, command.run_id),
                        command.event_type,
                        f"{command.run_id}:{command.key}",
                        command.data,
                        now,
                        command.run_id,
                        trace,
                        # Run outcomes name their workflow in ce-subject, so other workflows
                        # can be triggered by them with a plain attribute filter.
                        subject=getattr(command.data, "workflow", None),
                    )
                )

    async def _publish_now(self, batch: Batch, now: float) -> None:
        due = [row for row in batch.outbox.values() if row.due_at <= now]
        for row in batch.outbox.values():
            if row.due_at > now:
                heapq.heappush(self._timers, row.due_at)
        if not due:
            return
        # Sent now; their acks are awaited off the loop's critical path, so the next batch is
        # applied while JetStream acknowledges this one. Rows are deleted only once acked.
        try:
            acked = await self.bus.send_many([(r.subject, r.headers, r.body) for r in due])
        except BusError as exc:
            self._outbox_failed(exc, len(due))
            return
        confirm = asyncio.create_task(self._confirm(acked, [r.id for r in due]))
        self._confirming.add(confirm)
        confirm.add_done_callback(self._confirming.discard)

    async def _confirm(self, acked: Callable[[], Awaitable[None]], ids: list[str]) -> None:
        try:
            await acked()
        except BusError as exc:
            self._outbox_failed(exc, len(ids))
            return
        self.metrics.outbox_published += len(ids)
        self._published.extend(ids)

    def _outbox_failed(self, exc: BusError, rows: int) -> None:
        # Committed rows stay in the outbox; the flush retries them (same ids: no duplicates).
        log.warning("outbox publish failed; will retry", rows=rows, error=str(exc))
        self._outbox_backlog = True

    async def _flush_due(self, now: float) -> None:
        while self._timers and self._timers[0] <= now:
            heapq.heappop(self._timers)
        while True:
            rows = await self.store.due_outbox(now, limit=1000)
            if not rows:
                self._outbox_backlog = False
                return
            try:
                await self.bus.publish_many([(r.subject, r.headers, r.body) for r in rows])
            except BusError as exc:
                log.warning("outbox flush failed; will retry", rows=len(rows), error=str(exc))
                self._outbox_backlog = True
                return
            self.metrics.outbox_published += len(rows)
            await self.store.delete_outbox([r.id for r in rows] + self._take_published())
            if len(rows) < 1000:
                self._outbox_backlog = False
                return

    def _take_published(self) -> list[str]:
        taken, self._published = self._published, []
        return taken

    async def _park(self, item: _Item) -> None:
        """Copy a message we cannot apply onto the DLQ with the reason; then it can be acked."""
        delivery = item.delivery
        reason = (item.problem or "unknown")[:_MAX_PARK_REASON]
        headers = {k: v for k, v in delivery.headers.items() if k != MSG_ID_HEADER}
        headers["Conveyor-Dlq-Reason"] = reason.encode("ascii", "replace").decode()
        headers["Conveyor-Dlq-Subject"] = delivery.subject
        # Deduplicated by position in the event stream: a redelivery is not parked twice.
        headers[MSG_ID_HEADER] = f"dlq:{self.topology.events_stream}:{delivery.stream_seq}"
        await self.bus.publish_raw(
            self.topology.dlq_subject("orchestrator"), headers, delivery.data
        )
        self.metrics.events["parked"] += 1
        log.warning("event parked on the DLQ", reason=reason, subject=delivery.subject)

    # ---- reads for the API -------------------------------------------------------------
    @property
    def cached_runs(self) -> int:
        return len(self._cache)

    @property
    def pending_timers(self) -> int:
        return len(self._timers)

    async def refresh_gauges(self) -> None:
        """Queue depths and DLQ size: asked of JetStream, so refreshed now and then, not per
        scrape (the scrape runs in another thread)."""
        with contextlib.suppress(BusError):
            for queue in await self.bus.queues():
                self.metrics.queue_depth[queue] = await self.bus.pending(
                    self.topology.tasks_stream, self.topology.queue_consumer(queue)
                )
            self.metrics.dlq_messages = await self.bus.stream_size(self.topology.dlq_stream)


def _row(
    nats_subject: str,
    event_type: str,
    event_id: str,
    data: WireModel,
    due_at: float,
    run_id: str,
    traceparent: str | None,
    subject: str | None = None,  # the CloudEvent's subject attribute
) -> OutboxRow:
    extensions = {"runid": run_id}
    if traceparent:
        extensions["traceparent"] = traceparent
    event = CloudEvent.create(
        event_type, SOURCE, data, id=event_id, subject=subject, extensions=extensions
    )
    headers, body = encode(event)
    return OutboxRow(event_id, nats_subject, headers, body, due_at)


def _child_cannot_start(parent: ParentRef, run_id: str, exc: UnknownWorkflow) -> Transition:
    """A sub-workflow that does not exist fails its parent's node (instead of leaving it to
    wait forever); the request itself creates no run."""
    failed = TaskFailed(
        run_id=parent.run_id,
        node_id=parent.node_id,
        attempt=parent.attempt,
        worker=f"run:{run_id}",
        error=ErrorInfo(type="UnknownWorkflow", message=str(exc), retryable=False),
    )
    return Transition(
        None, commands=[Emit(TASK_FAILED, parent.run_id, failed, f"child:{run_id}:failed")]
    )


def _item_run_id(item: _Item) -> str | None:
    if isinstance(item.data, RunRequested) and item.event is not None:
        return requested_run_id(item.data, item.event.source, item.event.id)
    return _run_id_of(item.data)


def _run_id_of(data: WireModel | None) -> str | None:
    return (
        getattr(data, "run_id", None)
        if data is not None and not isinstance(data, RunRequested)
        else None
    )


async def _keep_alive(deliveries: Sequence[Delivery]) -> None:
    while True:
        await asyncio.sleep(ORCHESTRATOR_ACK_WAIT_S / 4)
        for delivery in deliveries:
            await delivery.in_progress()


async def _settle_quietly(delivery: Delivery, outcome: Outcome) -> None:
    # An unsettled message is redelivered, and the processed-id check drops it.
    with contextlib.suppress(BusError):
        await delivery.settle(outcome)
