"""Hostile messages on the bus, against a real nats-server: no single message may stall a
consumer or close a connection.

On each stream a component reads — the events stream (engine), the ingest stream (router), a
task subject (worker), the run outcomes (notifier) — two messages arrive among good ones,
published by a foreign client: one whose headers cannot be copied (`Nats-Expected-Stream`,
`x(y)`) and one of random bytes a few bytes under the server's max payload. Each is parked on
the dead-letter stream with its reason (the copy lists the headers it could not keep and fits
the limit), the good messages around them are applied, the consumer ends with nothing pending
(an unparkable message would be redelivered forever), and the component's connection is open.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from events import Bus, CloudEvent
from events.bus import Delivery
from events.codec import encode
from events.dlq import REASON
from events.testing import eventually
from orchestrator import workflow
from orchestrator.http.server import ApiServer
from orchestrator.triggers.webhooks.notifier import Notifier
from tests.integration import trigger_flows as flows
from tests.integration.harness import Harness
from tests.integration.hostile import (
    check_copy,
    consumer_settled,
    near_max_garbage,
    parked,
    raw_publish,
    truncated_to,
    unparkable_headers,
)
from tests.integration.test_webhooks import Receiver

NOT_AN_EVENT = "not a CloudEvent"
UNKEPT = {"Nats-Expected-Stream", "x(y)"}


async def _publish_hostile_pair(harness: Harness, bus: Bus, subject: str, stream: str) -> int:
    """The two hostile messages on `subject`; returns the garbage message's size."""
    headers = unparkable_headers(stream)
    await raw_publish(harness.server.url, subject, headers, b"\x00 not an event")
    garbage = near_max_garbage(bus.max_payload, [("x(y)", "2")])
    await raw_publish(harness.server.url, subject, [("x(y)", "2")], garbage)
    return len(garbage)


async def _check_parked(
    bus: Bus, origin: str, garbage_size: int, reason: str, *, total: int | None = None
) -> None:
    """The first two copies `origin` parked are the hostile pair's (published first); `total`:
    how many it parked in all (each message once)."""

    async def both() -> list[Delivery] | None:
        copies = await parked(bus, origin)
        return copies[:2] if len(copies) >= 2 else None

    unkept, garbage = await eventually(both, message=f"two messages parked by the {origin}")
    check_copy(unkept, bus.max_payload, reason=reason, dropped=UNKEPT)
    assert unkept.headers["ce-note"] == "kept" and unkept.data == b"\x00 not an event"
    check_copy(garbage, bus.max_payload, reason=reason, dropped={"x(y)"})
    assert truncated_to(garbage) == garbage_size
    if total is not None:
        assert len(await parked(bus, origin)) == total


async def _settled(bus: Bus, stream: str, durable: str) -> None:
    async def probe() -> bool:
        return await consumer_settled(bus, stream, durable)

    await eventually(probe, message=f"{durable} to have nothing pending (nothing redelivered)")


async def test_the_engine_parks_hostile_events_and_applies_the_rest(harness: Harness) -> None:
    await harness.register(flows.child_double)
    bus, topology = harness.client.bus, harness.topology
    # Published before the engine starts, so that one fetch hands it all of them at once.
    first = await harness.client.trigger("child_double", {"x": 1})
    size = await _publish_hostile_pair(
        harness, bus, f"{topology.namespace}.evt.0.task.completed.r1", topology.events_stream
    )
    second = await harness.client.trigger("child_double", {"x": 2})
    engine = await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)

    assert (await harness.client.wait(first, timeout=30))["output"] == 2
    assert (await harness.client.wait(second, timeout=30))["output"] == 4
    await _check_parked(bus, "orchestrator", size, NOT_AN_EVENT, total=2)
    await _settled(bus, topology.events_stream, topology.orchestrator_consumer(0))
    assert not engine.bus.is_closed


async def test_the_router_parks_hostile_ingested_messages_and_triggers_the_rest(
    harness: Harness,
) -> None:
    await harness.register(flows.on_order)
    bus, topology = harness.client.bus, harness.topology
    subject = topology.ingest_subject("com.shop.order.created")

    async def order(n: int) -> None:
        event = CloudEvent.create("com.shop.order.created", "shop", {"n": n}, subject=f"o{n}")
        await bus.publish(subject, event)

    await order(1)
    size = await _publish_hostile_pair(harness, bus, subject, topology.ingest_stream)
    # A good event may carry headers a copy could not: it is simply applied.
    good_but_odd = CloudEvent.create("com.shop.order.created", "shop", {"n": 3}, subject="o3")
    headers = list(encode(good_but_odd)[0].items())
    await raw_publish(
        harness.server.url,
        subject,
        [*headers, *unparkable_headers(topology.ingest_stream)],
        good_but_odd.data,
    )
    # Valid events that are hostile to a run's input: JSON data nested too deeply for a parser
    # (it starts a run with the data as base64), and data that fits one message but not as a
    # run's input once made JSON (base64: 4/3 larger), which is parked.
    nested = b"[" * 5000 + b"]" * 5000
    await bus.publish(subject, CloudEvent("deep", "shop", "com.shop.order.created", nested))
    large = CloudEvent(
        "large", "shop", "com.shop.order.created", os.urandom(900_000), "image/png", "o5"
    )
    await bus.publish(subject, large)
    await order(2)
    await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)
    router = await harness.start_router()

    async def four_runs() -> list[dict[str, Any]] | None:
        runs = [
            r for r in await harness.client.runs(workflow="on_order") if r["status"] == "succeeded"
        ]
        return runs if len(runs) >= 4 else None

    runs = await eventually(four_runs, timeout=30, message="four on_order runs")
    assert len(runs) == 4
    await _check_parked(bus, "router", size, NOT_AN_EVENT, total=3)
    too_large = (await parked(bus, "router"))[2]
    assert "event 'large' cannot be carried to a run" in too_large.headers[REASON]
    await _settled(bus, topology.ingest_stream, topology.router_consumer(0, "ingest"))
    assert not router.bus.is_closed


async def test_the_worker_parks_hostile_task_messages_and_runs_the_rest(
    harness: Harness,
) -> None:
    await harness.register(flows.child_double)
    bus, topology = harness.client.bus, harness.topology
    await harness.start_orchestrator()
    first = await harness.client.trigger("child_double", {"x": 5})
    # On the subject of a task the worker serves (tasks are routed by name).
    task_subject = topology.task_subject("default", "double")
    size = await _publish_hostile_pair(harness, bus, task_subject, topology.tasks_stream)
    # A dispatch whose run id is no subject token: its results could never be published.
    data = {"run_id": "a b", "node_id": "n", "attempt": 1, "task": "double", "queue": "default"}
    dispatch = CloudEvent.create("io.conveyor.task.dispatched", "hostile", {**data, "input": {}})
    await bus.publish(task_subject, dispatch)
    second = await harness.client.trigger("child_double", {"x": 6})
    worker = await harness.start_worker(flows.TASKS)

    assert (await harness.client.wait(first, timeout=30))["output"] == 10
    assert (await harness.client.wait(second, timeout=30))["output"] == 12
    await _check_parked(bus, "worker", size, NOT_AN_EVENT)
    copies = await parked(bus, "worker")
    assert len(copies) == 3  # each once
    assert "run_id: String should match pattern" in copies[2].headers["Conveyor-Dlq-Reason"]
    await _settled(bus, topology.tasks_stream, topology.task_consumer("default", "double"))
    assert not worker.bus.is_closed


async def test_the_notifier_parks_hostile_outcomes_and_delivers_the_rest(
    harness: Harness,
) -> None:
    receiver = Receiver()
    async with ApiServer(receiver.app, port=0) as endpoint:

        @workflow(notify=[{"url": f"{endpoint.url}/hook", "on": ["succeeded"]}])
        def announced(x: int = 1) -> int:
            return flows.double(x)

        await harness.start_orchestrator()
        await harness.start_worker(flows.TASKS)
        await harness.register(announced)
        bus, topology = harness.client.bus, harness.topology
        subject = f"{topology.namespace}.evt.0.run.succeeded.hostile"
        size = await _publish_hostile_pair(harness, bus, subject, topology.events_stream)
        bad_outcomes = await _publish_bad_outcomes(bus, subject)

        own = await Bus.connect(harness.server.url, topology, name="notifier")
        notifier = Notifier(own, backoff_s=0.05)
        task = asyncio.create_task(notifier.run())
        try:
            final = await harness.run(announced, {"x": 4})
            await eventually(_delivered(receiver), message="the real outcome delivered")
            await _check_parked(bus, "notifier", size, NOT_AN_EVENT)

            async def all_parked() -> list[Delivery] | None:
                copies = await parked(bus, "notifier")
                return copies if len(copies) >= 2 + len(bad_outcomes) else None

            copies = await eventually(all_parked, message="every bad outcome parked")
            reasons = [c.headers["Conveyor-Dlq-Reason"] for c in copies[2:]]
            for expected, reason in zip(bad_outcomes, reasons, strict=True):
                assert expected in reason, (expected, reason)
            await _settled(bus, topology.events_stream, topology.notifier_consumer(0))
            assert not own.is_closed
            assert not task.done()
        finally:
            notifier.stop()
            await asyncio.wait_for(task, 10)
            await notifier.drain()
            await own.close()
    [(_, body)] = receiver.requests
    assert json.loads(body)["data"]["run_id"] == final["run_id"]


def _delivered(receiver: Receiver) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return bool(receiver.requests)

    return probe


async def _publish_bad_outcomes(bus: Bus, subject: str) -> list[str]:
    """Valid CloudEvents whose data no outcome has; returns what each one's reason says."""
    cases: list[tuple[Any, str]] = [
        ([1, 2], "data does not fit RunSucceeded"),
        ({"run_id": "r", "workflow": "w"}, "version: Field required"),
        ({"run_id": "a b", "workflow": "announced", "version": 1}, "run_id: String should match"),
        ({"run_id": "r" * 5000, "workflow": "announced", "version": 1}, "run_id: String should"),
        ({"run_id": "r", "workflow": "no such flow", "version": 1}, "unknown workflow"),
        ({"run_id": "r", "workflow": "w" * 5000, "version": 1}, "unknown workflow"),
    ]
    for index, (data, _) in enumerate(cases):
        event = CloudEvent.create("io.conveyor.run.succeeded", "hostile", data, id=f"bad-{index}")
        await bus.publish(subject, event)
    return [reason for _, reason in cases]
