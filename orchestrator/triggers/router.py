"""The trigger router: turns upstream CloudEvents into run requests and wakes waiting nodes.

It reads two durable consumers per partition:
  - `router-ingest-p<p>`: every CloudEvent anyone publishes on `<ns>.ingest.>` (binary or
    structured mode; the webhook gateway publishes there too);
  - `router-outcomes-p<p>`: the partition's own run.succeeded / failed / cancelled events (their
    `ce-subject` is the workflow's name), so workflows can be chained across teams.

For each event:
  - every registered workflow whose `on` filters match gets a run.requested whose run id is
    derived from (workflow, event source, event id): a redelivered or republished event starts no
    second run. The run's input is `{"event": {...}}`. (Partition 0 does this, so each event
    triggers once however many partitions there are.) A debounced or batched workflow gets a
    trigger.collected event instead, for the collector of the event's key, which starts the
    runs (docs/flow-control.md).
  - every node of this partition waiting for the event's type whose `match` attributes equal the
    event's gets a wait.matched event.
Published durably first, acked after: nothing accepted is lost. What no retry can handle is parked
on `<ns>.dlq.router` with the reason: a message that is no CloudEvent, and an event too large to
carry as a run's input (its data as JSON, or base64 when it is not JSON: a third larger).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import structlog

from events.acks import Outcome
from events.bus import ORCHESTRATOR_ACK_WAIT_S, Bus, Delivery, KeptAlive, settle_quietly
from events.codec import decode
from events.consuming import Fetcher
from events.dlq import park
from events.envelope import CloudEvent, strict_json
from events.errors import BusClosed, BusError, MalformedEvent, MessageTooLarge
from events.filters import attribute, matches
from events.ids import derived_id
from events.models import (
    RUN_REQUESTED,
    TRIGGER_COLLECTED,
    WAIT_MATCHED,
    RunRequested,
    WaitMatched,
)
from orchestrator.core.collect import collected
from orchestrator.core.flowcheck import Collecting, run_flow
from orchestrator.core.spec import WorkflowSpec
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.store import Store

log = structlog.get_logger("conveyor.router")
SOURCE = "conveyor/router"
_TRIGGERS_TTL_S = 1.0


def event_as_json(event: CloudEvent) -> dict[str, Any]:
    """The event as a run input or node output: attributes, extensions and data (parsed JSON,
    or base64 for binary data)."""
    data: Any
    try:
        data = strict_json(event.data) if event.data else None
    except (ValueError, RecursionError):
        data = {"base64": base64.b64encode(event.data).decode()}
    return {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event.time,
        "datacontenttype": event.datacontenttype,
        "extensions": dict(event.extensions),
        "data": data,
    }


class TriggerIndex:
    """The registered workflows that have `on` triggers, as of the registry's last change.

    `refresh()` asks the registry bucket's last sequence (one request) and reads the specs
    again only when it moved. Callers refresh after they received events and before they match
    them, so an event published after a registration completed is matched against it: no event
    slips past a workflow registered a moment before (as a time-based cache would let it)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._specs: list[WorkflowSpec] = []
        self._revision: int | None = None

    async def refresh(self) -> None:
        revision = await self.registry.revision()  # first: a change during the read is seen next
        if revision == self._revision:
            return
        self.registry.forget_latest()
        self._specs = [s for s in await self.registry.specs() if s.on]
        self._revision = revision

    def collecting(self, spec: WorkflowSpec) -> Collecting | None:
        """How `spec`'s triggers are debounced or batched (None: one run per event)."""
        if spec.debounce is None and spec.batch is None:
            return None
        return run_flow(spec)[0].collecting  # registered specs are valid: no problems here

    def runs_for(self, event: CloudEvent) -> list[tuple[WorkflowSpec, str]]:
        """Each workflow `event` starts, with the run id it starts (derived: at most once), as
        of the last `refresh()`."""
        return [
            (spec, trigger_run_id(spec.name, event))
            for spec in self._specs
            if any(matches(f, event) for f in spec.on)
        ]


def trigger_run_id(workflow: str, event: CloudEvent) -> str:
    return derived_id("trigger", workflow, event.source, event.id)


class Router:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        partition: int = 0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.topology = bus.topology
        self.partition = partition
        self.registry = Registry(bus)
        self.triggers = TriggerIndex(self.registry)
        self.triggered = 0
        self.woken = 0
        self.name = f"router-p{partition}"
        self._fetchers: list[Fetcher] = []
        self._stopping = asyncio.Event()

    # ---- lifecycle (runtime.supervisor.Component) -----------------------------------------
    async def start(self) -> None:
        for source in ("ingest", "outcomes"):
            puller = await self.bus.router_puller(self.partition, source)
            self._fetchers.append(Fetcher(puller, f"{self.name}/{source}"))

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Until stopped. A store that fails (a full disk) or a closed connection ends it, and
        with it the process: a process without its router would accept triggers it never
        starts."""
        if not self._fetchers:
            await self.start()
        async with asyncio.TaskGroup() as group:
            for fetcher in self._fetchers:
                group.create_task(self._loop(fetcher))

    async def drain(self) -> None:
        for fetcher in self._fetchers:
            await fetcher.close()
        self._fetchers.clear()

    async def _loop(self, fetcher: Fetcher) -> None:
        while not self._stopping.is_set():
            deliveries = await fetcher.fetch(64, timeout=1.0)
            if not deliveries:
                continue
            if self.partition == 0 and not await self._refresh_triggers(deliveries):
                continue
            # The consumer's ack wait is short (a killed router's fetch comes back at once):
            # a batch that outlasts it is kept with in_progress() until each is settled.
            with KeptAlive(deliveries, ORCHESTRATOR_ACK_WAIT_S / 4):
                await self._handle_all(deliveries)

    async def _refresh_triggers(self, deliveries: list[Delivery]) -> bool:
        """The trigger index as of now, after `deliveries` were received; False (each handed
        back to come again) when the registry cannot be read."""
        try:
            await self.triggers.refresh()
        except BusClosed:
            raise
        except BusError as exc:
            log.warning("router cannot read the registry; retrying its events", error=str(exc))
            for delivery in deliveries:
                await settle_quietly(delivery, Outcome.TRANSIENT)
            return False
        return True

    async def _handle_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await self.handle(delivery)
            except BusClosed:
                raise
            except BusError as exc:  # handle() handed the event back: it comes again
                log.warning("router could not handle an event; retrying", error=str(exc))

    async def handle(self, delivery: Delivery) -> None:
        """Trigger and wake what `delivery` matches, then ack it; park what cannot be handled
        whatever is retried (not a CloudEvent; an event too large to carry as a run's input or
        a wait's match); hand back (BusError) what failed for a reason that may pass."""
        try:
            event = decode(delivery.headers, delivery.data)
        except MalformedEvent as exc:
            await self._park(delivery, exc.reason)
            return
        try:
            await self._trigger(event)
            await self._wake(event)
        except MessageTooLarge as exc:
            # The event itself fits, but the run request or wait.matched that carries it as
            # JSON does not: no retry can change that.
            await self._park(delivery, f"event {event.id!r} cannot be carried to a run: {exc}")
            return
        except BusError:
            await settle_quietly(delivery, Outcome.TRANSIENT)
            raise
        await delivery.settle(Outcome.DONE)

    async def _park(self, delivery: Delivery, reason: str) -> None:
        try:
            await park(self.bus, delivery, "router", reason)
        except BusError:
            await settle_quietly(delivery, Outcome.TRANSIENT)
            raise
        await delivery.settle(Outcome.PARKED)

    async def _trigger(self, event: CloudEvent) -> None:
        if self.partition != 0:
            return
        for spec, run_id in self.triggers.runs_for(event):
            collecting = self.triggers.collecting(spec)
            if collecting is not None:
                await self._collect(spec.name, collecting, event)
                continue
            request = RunRequested(
                workflow=spec.name, input={"event": event_as_json(event)}, run_id=run_id
            )
            extensions = {"runid": run_id}
            if "traceparent" in event.extensions:
                extensions["traceparent"] = event.extensions["traceparent"]
            requested = CloudEvent.create(
                RUN_REQUESTED, SOURCE, request, id=f"{run_id}:requested", extensions=extensions
            )
            await self.bus.publish(self.topology.event_subject(RUN_REQUESTED, run_id), requested)
            self.triggered += 1
            log.info("run triggered", workflow=spec.name, run_id=run_id, by=event.id)

    async def _collect(self, workflow: str, collecting: Collecting, event: CloudEvent) -> None:
        data = collected(workflow, collecting, event_as_json(event))
        out = CloudEvent.create(
            TRIGGER_COLLECTED,
            SOURCE,
            data,
            # A redelivered or republished event is collected once (the collector's processed-id
            # check, or JetStream's duplicate window, drops the repeat).
            id=derived_id("collected", data.collector, event.source, event.id),
            extensions={"runid": data.collector},
        )
        await self.bus.publish(self.topology.event_subject(TRIGGER_COLLECTED, data.collector), out)
        self.triggered += 1

    async def _wake(self, event: CloudEvent) -> None:
        for wait in await self.store.waits_for(event.type):
            if self.topology.partition(wait.run_id) != self.partition:
                continue
            if any(attribute(event, k) != v for k, v in wait.match.items()):
                continue
            matched = WaitMatched(
                run_id=wait.run_id,
                node_id=wait.node_key,
                attempt=wait.attempt,
                event=event_as_json(event),
            )
            event_id = derived_id(
                "wait", wait.run_id, wait.node_key, str(wait.attempt), event.source, event.id
            )
            out = CloudEvent.create(
                WAIT_MATCHED, SOURCE, matched, id=event_id, extensions={"runid": wait.run_id}
            )
            await self.bus.publish(self.topology.event_subject(WAIT_MATCHED, wait.run_id), out)
            self.woken += 1
