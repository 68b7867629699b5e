"""A batch of deliveries applied through the machine, into one `Batch` to commit.

For each delivery: decode it (a malformed one gets a `problem`, to be parked), resolve a
claim-checked result (the machine stays pure: it gets the output in hand), drop an event id
already processed (exactly-once), load the run (hot runs are cached), `start_run` or `advance`,
and stage the new state and the commands' outbox rows. Each event is applied at its time in the
stream (`runtime.clock`), never at this process's clock. A flow-control event emitted for this
very partition (a run asking its limiter, the limiter granting) is also applied in the same batch
(`Applier._delivered_here`). Nothing is committed or published here: `Engine` does that once for
the whole batch.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from events.bus import Bus, Delivery
from events.codec import decode
from events.envelope import CloudEvent
from events.errors import BusError, BusUnavailable, MalformedEvent
from events.ids import is_token
from events.models import (
    DATA_MODELS,
    LIMIT_GRANTED,
    LIMIT_REFUSED,
    LIMIT_RELEASED,
    LIMIT_REQUESTED,
    TASK_FAILED,
    ErrorInfo,
    ParentRef,
    RunRequested,
    TaskCompleted,
    TaskFailed,
    WireModel,
    requested_run_id,
)
from events.topology import ORCHESTRATOR_INPUTS
from events.tracing import is_traceparent, run_traceparent
from orchestrator.core.commands import Command, Emit
from orchestrator.core.flow import FLOW_EVENTS, entity_of
from orchestrator.core.limits import FlowTransition
from orchestrator.core.machine import advance, start_run
from orchestrator.core.outbox import Batch, stage_commands
from orchestrator.core.state import RunState, Transition
from orchestrator.core.statuses import RUN_TERMINAL
from orchestrator.core.trigger import trigger_of
from orchestrator.errors import EventRejected, SpecError, UnknownWorkflow
from orchestrator.runtime.clock import EventClock
from orchestrator.runtime.flows import FlowCache
from orchestrator.runtime.metrics import EngineMetrics
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.store import Store

log = structlog.get_logger("conveyor.engine")
# Applied at once when their target lives on this partition (see `Applier._delivered_here`).
_LOCAL_TYPES = frozenset({LIMIT_REQUESTED, LIMIT_GRANTED, LIMIT_REFUSED, LIMIT_RELEASED})


@dataclass(slots=True)
class Item:
    """One delivery on its way through a batch."""

    delivery: Delivery
    event: CloudEvent | None = None
    data: WireModel | None = None
    problem: str | None = None  # why it cannot be applied: it will be parked

    @property
    def run_id(self) -> str | None:
        if isinstance(self.data, RunRequested) and self.event is not None:
            return requested_run_id(self.data, self.event.source, self.event.id)
        return _run_id_of(self.data)


@dataclass(slots=True)
class Applied:
    """What applying a batch produced: the writes, and what to report once committed."""

    batch: Batch
    transitions: list[tuple[Transition, WireModel | None]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # runs changed in the cache
    flows: list[FlowTransition] = field(default_factory=list)  # limiters, collectors
    touched_flows: set[str] = field(default_factory=set)  # their ids, changed in the cache
    now: float = 0.0  # the latest time (in the stream) an event of the batch was applied at
    times: list[float] = field(default_factory=list)  # each transition's, as `transitions`


class RunCache:
    """Hot runs, most recently used last; a finished run leaves it once its batch committed."""

    def __init__(self, store: Store, size: int) -> None:
        self.store = store
        self.size = size
        self._runs: OrderedDict[str, RunState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    async def load(self, run_id: str) -> RunState | None:
        run = self._runs.get(run_id)
        if run is not None:
            self._runs.move_to_end(run_id)
            return run
        run = await self.store.load_run(run_id)
        if run is not None:
            self.remember(run)
        return run

    def remember(self, run: RunState) -> None:
        self._runs[run.run_id] = run
        while len(self._runs) > self.size:
            self._runs.popitem(last=False)

    def forget(self, run_ids: set[str]) -> None:
        for run_id in run_ids:
            self._runs.pop(run_id, None)

    def forget_finished(self, run_ids: set[str]) -> None:
        for run_id in run_ids:
            run = self._runs.get(run_id)
            if run is not None and run.status in RUN_TERMINAL:
                del self._runs[run_id]


class Applier:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        metrics: EngineMetrics,
        *,
        projection: bool,
        cache_size: int,
        partition: int = 0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.topology = bus.topology
        self.partition = partition
        self.registry = Registry(bus)
        self.metrics = metrics
        self.projection = projection
        # The shortcut of `_delivered_here` makes what is decided depend on where batches
        # happen to end (a local event is applied after the rest of its batch, a delivered one
        # in stream order). A static owner's decisions are committed before they act, so that
        # is harmless; a lease-mode successor re-decides from a snapshot and the stream, with
        # other batch ends, while what a deposed owner decided may already have run (a task it
        # dispatched). So under a tenure every event is applied in stream order, as delivered.
        self.shortcut = not projection and bus.tenure is None
        self.cache = RunCache(store, cache_size)
        self.flows = FlowCache(store, cache_size)
        self.clock = EventClock(store, self.topology, partition)
        # Every run and flow entity the current `apply` has begun to change (events delivered
        # here included): what to forget if it raises.
        self._touching: set[str] = set()

    def forget_touched(self) -> None:
        """An `apply` raised: whatever it began to change in the caches is read back from the
        store next time (the runs and entities of events delivered here included)."""
        self.cache.forget(self._touching)
        self.flows.forget(self._touching)
        self._touching = set()

    @staticmethod
    def flow_ids(items: Sequence[Item]) -> set[str]:
        """The limiters and collectors `items` are for."""
        return {entity_of(i.data) for i in items if isinstance(i.data, FLOW_EVENTS)}

    async def prepare(self, deliveries: Sequence[Delivery]) -> list[Item]:
        items = [self._decode(d) for d in deliveries]
        if self.projection:
            # A projection reads every event on the stream: the machine's outputs (run
            # outcomes, cancel requests) are not its inputs, and are passed over silently.
            items = [i for i in items if not _an_output(i)]
        for item in items:
            await self._resolve_claim_check(item)
        return items

    async def apply(self, items: list[Item], *, isolated: bool = False) -> Applied:
        """Apply `items` into one Batch, each at its time in the stream. A contract breach
        (unknown run or node, unknown workflow, invalid spec) marks its item as a problem. Any
        other exception is a bug: it propagates — unless `isolated` (one event on its own), when
        the event is parked."""
        # An event is identified by its source and id together (`CloudEvent.key`).
        keys = [i.event.key for i in items if i.event is not None and i.problem is None]
        seen = await self.store.already_processed(keys)
        clock = await self.clock.batch([i.delivery for i in items])
        out = Applied(Batch())
        self._touching = set()
        queue = deque(items)
        while queue:
            item = queue.popleft()
            now = clock.now(item.delivery)
            if item.problem is not None or item.event is None:
                continue
            if item.event.key in seen:
                self.metrics.events["duplicate"] += 1
                continue
            seen.add(item.event.key)
            self._touching.update(self.flow_ids([item]), [item.run_id] if item.run_id else [])
            transition = await self._apply_one(item, now, isolated)
            if transition is None:
                continue
            out.batch.processed.append(item.event.key)
            if not transition.applied:
                self.metrics.events["stale"] += 1
                continue
            if isinstance(transition, FlowTransition):
                self._stage_flow(out, transition, now)
            else:
                self._stage(out, transition, now)
                out.transitions.append((transition, item.data))
                out.times.append(now)
            queue.extend(self._delivered_here(out.batch, transition.commands, now))
        out.batch.positions.update(clock.positions())
        out.now = clock.latest_us / 1_000_000
        self.clock.keep(clock)
        return out

    def _delivered_here(self, batch: Batch, commands: Sequence[Command], now: float) -> list[Item]:
        """Flow-control events this batch emitted for a limiter or a run of this very partition,
        applied in this batch as if delivered at once (what a limit costs is these hops).

        Their outbox rows are published all the same — the event log, the projection and any
        other reader see them, in causal order — and their ids are committed as processed with
        this batch, so their delivery from the stream later is a duplicate that changes nothing.
        It is a shortcut of the transport, not a rule: any order the bus could deliver in."""
        if not self.shortcut:
            return []
        local = []
        for command in commands:
            if not isinstance(command, Emit) or command.event_type not in _LOCAL_TYPES:
                continue
            if self.topology.partition(command.run_id) != self.partition:
                continue
            row = batch.outbox.get(f"{command.run_id}:{command.key}")
            if row is not None and row.due_at <= now:
                delivery = Delivery(row.subject, row.headers, row.body, 1, 0, None)
                local.append(self._decode(delivery))
        return local

    async def _apply_one(
        self, item: Item, now: float, isolated: bool
    ) -> Transition | FlowTransition | None:
        assert item.event is not None
        try:
            if isinstance(item.data, FLOW_EVENTS):
                return await self.flows.apply(item.data, now)
            return await self._transition(item.event, item.data, now)
        except (EventRejected, UnknownWorkflow, SpecError) as exc:
            item.problem = str(exc)
        except Exception as exc:
            if not isolated:
                raise
            log.exception("internal error applying an event; parked", event_id=item.event.id)
            item.problem = f"internal error applying event: {type(exc).__name__}: {exc}"
            if item.run_id is not None:
                self.cache.forget({item.run_id})
            if isinstance(item.data, FLOW_EVENTS):
                self.flows.forget({entity_of(item.data)})
        return None

    def _stage_flow(self, out: Applied, transition: FlowTransition, now: float) -> None:
        entity = transition.entity
        assert entity is not None
        out.touched_flows.add(entity.entity_id)
        out.batch.stage_flow(entity, transition.changed)
        out.flows.append(transition)
        if not self.projection:
            stage_commands(
                out.batch, transition.commands, now=now, trace=None, topology=self.topology
            )

    def _stage(self, out: Applied, transition: Transition, now: float) -> None:
        trace = None
        if transition.run is not None:
            out.touched.add(transition.run.run_id)
            out.batch.stage_run(transition.run, transition.changed)
            trace = transition.run.traceparent
        if not self.projection:
            stage_commands(
                out.batch, transition.commands, now=now, trace=trace, topology=self.topology
            )

    async def _transition(
        self, event: CloudEvent, data: WireModel | None, now: float
    ) -> Transition:
        if isinstance(data, RunRequested):
            return await self._start(event, data, now)
        run_id = _run_id_of(data)
        assert run_id is not None
        run = await self.cache.load(run_id)
        if run is None:
            raise EventRejected(f"event {event.id!r} ({event.type}) is for unknown run {run_id!r}")
        spec = await self.registry.get(run.workflow, run.version)
        before = run.status
        transition = advance(spec, run, data, now)  # type: ignore[arg-type]
        if run.status != before and run.status in RUN_TERMINAL:
            log.info("run finished", run_id=run_id, status=run.status)
        return transition

    async def _start(self, event: CloudEvent, data: RunRequested, now: float) -> Transition:
        run_id = requested_run_id(data, event.source, event.id)
        if not is_token(run_id):
            raise EventRejected(f"run_id {run_id!r} must be 1-128 of [A-Za-z0-9_-]")
        existing = await self.cache.load(run_id)
        if existing is not None:  # the same idempotency key, or the same request again
            return Transition(existing, applied=False)
        try:
            spec = await self.registry.get(data.workflow, data.version)
        except UnknownWorkflow as exc:
            if data.parent is None:
                raise
            return _child_cannot_start(data.parent, run_id, exc)
        transition = start_run(spec, run_id, data, now)
        assert transition.run is not None
        # The trace and the trigger are envelope metadata, not workflow data: the shell
        # carries them.
        caller = event.extensions.get("traceparent")
        caller = caller if is_traceparent(caller) else None
        transition.run.traceparent = run_traceparent(run_id, caller)
        transition.run.trigger = trigger_of(
            source=event.source,
            event_id=event.id,
            subject=event.subject,
            extensions=event.extensions,
            request=data,
        )
        self.cache.remember(transition.run)
        log.info("run started", run_id=run_id, workflow=spec.name, version=spec.version)
        return transition

    def _decode(self, delivery: Delivery) -> Item:
        item = Item(delivery)
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

    async def _resolve_claim_check(self, item: Item) -> None:
        """A result that came by claim check is applied with its output in hand: the machine
        stays pure, and the run's state holds the value itself."""
        data = item.data
        if not isinstance(data, TaskCompleted) or data.output_ref is None:
            return
        try:
            output = json.loads(await self.bus.get_artifact(data.output_ref))
        except BusUnavailable:
            raise  # the batch is retried
        except (BusError, ValueError) as exc:
            item.problem = f"output artifact of {data.node_id!r}: {exc}"
            return
        item.data = data.model_copy(update={"output": output, "output_ref": None})


def _an_output(item: Item) -> bool:
    return (
        item.event is not None
        and item.event.type in DATA_MODELS
        and (item.event.type not in ORCHESTRATOR_INPUTS)
    )


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


def _run_id_of(data: WireModel | None) -> str | None:
    if data is None or isinstance(data, (RunRequested, *FLOW_EVENTS)):
        return None
    run_id = getattr(data, "run_id", None)
    return run_id if isinstance(run_id, str) else None
