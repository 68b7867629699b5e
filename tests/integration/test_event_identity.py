"""An event is identified by its `source` and `id` together (CloudEvents), on a real nats-server:
the same id from two sources is two events everywhere — JetStream's duplicate window, the
orchestrator's processed-event check, the trigger router — while a repeat of one event is still
dropped (which is what makes the outbox's re-publishes harmless)."""

from __future__ import annotations

from typing import Any

from events import Bus, CloudEvent
from events.codec import decode
from events.models import RUN_REQUESTED, RunRequested
from events.testing import eventually
from tests.integration import trigger_flows as flows
from tests.integration.harness import Harness


async def test_jetstream_drops_a_repeat_of_an_event_but_not_the_same_id_from_elsewhere(
    bus: Bus,
) -> None:
    subject = bus.topology.ingest_subject("com.shop.order.created")
    eu = CloudEvent.create("com.shop.order.created", "shop/eu", {"n": 1}, id="order-1")
    us = CloudEvent.create("com.shop.order.created", "shop/us", {"n": 2}, id="order-1")
    assert await bus.publish(subject, eu) is False
    assert await bus.publish(subject, us) is False  # another event: kept
    assert await bus.publish(subject, eu) is True  # the same event again: dropped
    stored = await bus.stream_messages(bus.topology.ingest_stream)
    assert [decode(m.headers, m.data).source for m in stored] == ["shop/eu", "shop/us"]


async def test_run_requests_with_one_id_from_two_sources_start_two_runs(harness: Harness) -> None:
    await harness.register(flows.child_double)
    await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)
    bus = harness.client.bus
    for source, x in (("team/a", 1), ("team/b", 2)):
        # No run id and no idempotency key: the run is derived from the event's source and id.
        request = RunRequested(workflow="child_double", input={"x": x})
        event = CloudEvent.create(RUN_REQUESTED, source, request, id="request-1")
        await bus.publish(harness.topology.event_subject(RUN_REQUESTED, "r"), event)

    async def two_runs() -> list[dict[str, Any]] | None:
        runs = [r for r in await harness.client.runs(workflow="child_double")]
        done = [r for r in runs if r["status"] == "succeeded"]
        return done if len(done) == 2 else None

    runs = await eventually(two_runs, message="a run for each source")
    outputs = sorted([(await harness.client.status(r["run_id"]) or {})["output"] for r in runs])
    assert outputs == [2, 4]


async def test_ingested_events_with_one_id_from_two_sources_each_trigger(
    harness: Harness,
) -> None:
    await harness.register(flows.on_order)
    await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)
    await harness.start_router()
    bus = harness.client.bus
    subject = harness.topology.ingest_subject("com.shop.order.created")
    for source in ("shop/eu", "shop/us"):
        event = CloudEvent.create(
            "com.shop.order.created", source, {"from": source}, id="order-7", subject=source
        )
        await bus.publish(subject, event)

    async def two_runs() -> list[dict[str, Any]] | None:
        runs = [r for r in await harness.client.runs(workflow="on_order")]
        done = [r for r in runs if r["status"] == "succeeded"]
        return done if len(done) == 2 else None

    runs = await eventually(two_runs, message="a run for each source")
    subjects = {(await harness.client.status(r["run_id"]) or {})["output"]["subject"] for r in runs}
    assert subjects == {"shop/eu", "shop/us"}
