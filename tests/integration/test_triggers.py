"""Triggers, waits, sleeps and sub-workflows end to end on a real nats-server."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from events import RUN_REQUESTED, CloudEvent
from events.testing import eventually
from orchestrator import SpecError
from orchestrator.triggers.scheduler import schedule_run_id
from tests.integration import trigger_flows as flows
from tests.integration.harness import Harness


async def start(harness: Harness, *workflows: Any) -> Harness:
    await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)
    await harness.start_router()
    await harness.register(*workflows)
    return harness


async def publish(harness: Harness, event: CloudEvent) -> None:
    bus = harness.client.bus
    await bus.publish(bus.topology.ingest_subject(event.type), event)


async def runs_of(harness: Harness, workflow: str, count: int) -> list[dict[str, Any]]:
    async def listed() -> list[dict[str, Any]] | None:
        runs = await harness.client.runs(workflow=workflow)
        done = [r for r in runs if r["status"] in ("succeeded", "failed")]
        return done if len(done) >= count else None

    return await eventually(listed, message=f"{count} finished run(s) of {workflow}")


# ---- sub-workflows ------------------------------------------------------------------------


async def test_sub_workflow_output_flows_to_the_parent(harness: Harness) -> None:
    await start(harness, flows.parent_of_double, flows.child_double)
    final = await harness.run(flows.parent_of_double, {"x": 5})
    assert final["status"] == "succeeded", final
    assert final["output"] == {"child": 10, "again": 20}
    child_node = final["nodes"]["child_double"]
    assert child_node["attempt_history"][0]["worker"].startswith("run:")
    child_id = child_node["attempt_history"][0]["worker"].removeprefix("run:")
    child = await harness.client.status(child_id)
    assert child is not None and child["output"] == 10 and child["status"] == "succeeded"


async def test_a_failing_child_fails_its_parent_with_the_childs_error(harness: Harness) -> None:
    await start(harness, flows.parent_of_refusal, flows.child_refuses)
    final = await harness.run(flows.parent_of_refusal, {"x": 3})
    assert final["status"] == "failed"
    assert final["error"]["type"] == "NonRetryableError"
    assert final["error"]["message"] == "child refuses 3"
    assert final["error"]["node_id"] == "child_refuses"


async def test_a_child_workflow_that_does_not_exist(harness: Harness) -> None:
    await start(harness, flows.child_double)
    # At registration: refused, naming the node.
    try:
        await harness.register(flows.parent_of_refusal)
    except SpecError as exc:
        assert "node 'child_refuses': sub-workflow 'child_refuses' is not registered" in str(exc)
    else:
        raise AssertionError("registering a parent of an unknown child must fail")
    # At run time (a version that does not exist): the parent's node fails, nothing hangs.
    await harness.register(flows.parent_of_missing_version)
    final = await harness.run(flows.parent_of_missing_version, {"x": 1})
    assert final["status"] == "failed"
    assert final["error"]["type"] == "UnknownWorkflow"
    assert "child_double" in final["error"]["message"]


async def test_cancelling_the_parent_cancels_the_child(harness: Harness) -> None:
    from tests.integration import flows as basic

    @basic.workflow
    def parent_of_long(seconds: float = 60) -> Any:
        from orchestrator import subworkflow

        return subworkflow(basic.long_running, seconds=seconds)

    await harness.start_orchestrator()
    await harness.start_worker([basic.block, basic.inc_after])
    await harness.register(basic.long_running, parent_of_long)
    run_id = await harness.client.trigger("parent_of_long", {"seconds": 60})

    async def child_running() -> str | None:
        status = await harness.client.status(run_id)
        if status is None or status["nodes"]["long_running"]["status"] != "running":
            return None
        return str(status["nodes"]["long_running"]["attempt_history"][0]["worker"])

    child_id = (await eventually(child_running, message="the child run to start"))[4:]
    await eventually(lambda: _exists(harness, "block.started"), message="the child's task")
    await harness.client.cancel(run_id, "stop the family")
    final = await harness.client.wait(run_id, timeout=20)
    child = await harness.client.wait(child_id, timeout=20)
    assert final["status"] == "cancelled"
    assert child["status"] == "cancelled"
    assert child["nodes"]["block"]["status"] == "cancelled"


async def _exists(harness: Harness, name: str) -> bool:
    return (harness.workdir / name).exists()


# ---- durable sleep and waits ------------------------------------------------------------------


async def test_durable_sleep(harness: Harness) -> None:
    await start(harness, flows.naps)
    final = await harness.run(flows.naps, {"seconds": 0.3})
    assert final["status"] == "succeeded"
    nap = final["nodes"]["sleep"]["attempt_history"][0]
    assert nap["finished_at"] - nap["started_at"] >= 0.3
    assert final["output"]["after"] == "AWAKE"
    assert final["output"]["nap"]["slept_until"].endswith("Z")


async def test_durable_sleep_survives_an_orchestrator_restart(harness: Harness) -> None:
    import asyncio
    import signal

    await harness.register(flows.naps)
    harness.spawn_worker(str(harness_flows_path()))
    orchestrator = harness.spawn_orchestrator()

    async def serving() -> bool:
        try:
            return await harness.client.status("warm-up") is None  # its status API answers
        except Exception:
            return False

    # A sleep counts from the time in the stream of the event that started it: triggered before
    # the orchestrator is up, it could be over by the time the orchestrator applies it.
    await eventually(serving, timeout=60, message="the orchestrator to serve")
    run_id = await harness.client.trigger("naps", {"seconds": 2.0})

    async def sleeping() -> bool:
        try:
            status = await harness.client.status(run_id)
        except Exception:
            return False
        return status is not None and status["nodes"]["sleep"]["status"] == "running"

    await eventually(sleeping, message="the sleep to start")
    orchestrator.send_signal(signal.SIGKILL)
    await asyncio.to_thread(orchestrator.wait)
    harness.spawn_orchestrator()
    final = await harness.client.wait(run_id, timeout=30)
    assert final["status"] == "succeeded", harness.logs()
    assert final["output"]["after"] == "AWAKE"


def harness_flows_path() -> Any:
    from pathlib import Path

    return Path(flows.__file__)


async def test_wait_for_an_event_correlated_with_the_run(harness: Harness) -> None:
    await start(harness, flows.awaits_approval)
    first = await harness.client.trigger("awaits_approval", {"order": "o-1"})
    second = await harness.client.trigger("awaits_approval", {"order": "o-2"})

    async def waiting(run_id: str) -> bool:
        status = await harness.client.status(run_id)
        return status is not None and status["nodes"]["wait_approved"]["status"] == "running"

    await eventually(lambda: waiting(first), message="run 1 to wait")
    await eventually(lambda: waiting(second), message="run 2 to wait")
    # An approval for another order, and one of another type, wake nobody.
    await publish(
        harness, CloudEvent.create("com.shop.order.approved", "test", {"by": "x"}, subject="o-9")
    )
    await publish(
        harness, CloudEvent.create("com.shop.order.rejected", "test", {"by": "x"}, subject="o-1")
    )
    await publish(
        harness,
        CloudEvent.create(
            "com.shop.order.approved", "backoffice", {"by": "ada", "note": "ok"}, subject="o-2"
        ),
    )
    done = await harness.client.wait(second, timeout=20)
    assert done["output"] == {"approved_by": "ada", "said": "OK"}
    still = await harness.client.status(first)
    assert still is not None and still["status"] == "running"


async def test_a_wait_that_times_out_fails_or_takes_the_default(harness: Harness) -> None:
    await start(harness, flows.awaits_briefly, flows.awaits_with_default)
    failed = await harness.run(flows.awaits_briefly, {"order": "o-1"})
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "WaitTimeout"
    assert "com.shop.order.approved" in failed["error"]["message"]
    defaulted = await harness.run(flows.awaits_with_default, {"order": "o-1"})
    assert defaulted["status"] == "succeeded" and defaulted["output"] == "auto"


# ---- upstream-event triggers ------------------------------------------------------------------


async def test_a_published_event_starts_every_matching_workflow_once(harness: Harness) -> None:
    await start(harness, flows.on_order, flows.on_sensor)
    event = CloudEvent.create(
        "com.shop.order.created", "shop/orders", {"order": 17}, id="evt-17", subject="o-17"
    )
    await publish(harness, event)
    await publish(harness, event)  # republished: the same source + id starts no second run
    [run] = await runs_of(harness, "on_order", 1)
    final = await harness.client.status(run["run_id"])
    assert final is not None
    assert final["output"] == {
        "type": "com.shop.order.created",
        "subject": "o-17",
        "data": {"order": 17},
    }
    # Structured mode, from any client: a JSON body with the attributes.
    structured = {
        "specversion": "1.0",
        "id": "s-1",
        "source": "sensors/kitchen",
        "type": "com.home.temperature",
        "subject": "kitchen",
        "data": {"c": 21.5},
    }
    bus = harness.client.bus
    await bus.publish_raw(
        bus.topology.ingest_subject("com.home.temperature"),
        {"content-type": "application/cloudevents+json"},
        json.dumps(structured).encode(),
    )
    ignored = dict(structured, id="s-2", subject="test")  # `not` filter: not this one
    await bus.publish_raw(
        bus.topology.ingest_subject("com.home.temperature"),
        {"content-type": "application/cloudevents+json"},
        json.dumps(ignored).encode(),
    )
    [sensor] = await runs_of(harness, "on_sensor", 1)
    assert (await harness.client.status(sensor["run_id"]))["output"]["data"] == {"c": 21.5}  # type: ignore[index]
    assert len(await harness.client.runs(workflow="on_order")) == 1


async def test_an_event_published_right_after_a_registration_starts_its_run(
    harness: Harness,
) -> None:
    """The router matches each event against the registry as it was when the event arrived:
    a workflow registered a moment before is never missed (a cache of the triggers, fresh from
    the event just handled, must not hide it)."""
    await start(harness, flows.on_sensor)
    reading = CloudEvent.create("com.home.temperature", "sensors/hall", {"c": 19}, subject="hall")
    await publish(harness, reading)
    await runs_of(harness, "on_sensor", 1)  # the router has read the registry just now
    await harness.register(flows.on_order)
    order = CloudEvent.create("com.shop.order.created", "shop/orders", {"order": 18}, id="e-18")
    await publish(harness, order)
    [run] = await runs_of(harness, "on_order", 1)
    assert run["status"] == "succeeded"


async def test_a_runs_success_triggers_a_workflow_chained_on_it(harness: Harness) -> None:
    await start(harness, flows.child_double, flows.after_child_double)
    await harness.run(flows.child_double, {"x": 21})
    [chained] = await runs_of(harness, "after_child_double", 1)
    final = await harness.client.status(chained["run_id"])
    assert final is not None
    assert final["output"]["type"] == "io.conveyor.run.succeeded"
    assert final["output"]["subject"] == "child_double"
    assert final["output"]["data"]["output"] == 42


async def test_a_malformed_ingested_event_is_parked(harness: Harness) -> None:
    await start(harness, flows.on_order)
    bus = harness.client.bus
    await bus.publish_raw(bus.topology.ingest_subject("x"), {}, b"not an event")

    async def parked() -> list[str] | None:
        messages = await bus.stream_messages(bus.topology.dlq_stream)
        reasons = [m.headers.get("Conveyor-Dlq-Reason", "") for m in messages]
        return reasons or None

    reasons = await eventually(parked, message="the bad event on the DLQ")
    assert any("not a CloudEvent" in r for r in reasons)


# ---- cron schedules (a controllable clock: no waiting) -------------------------------------------


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


async def test_schedules_fire_once_per_instant_with_catch_up_policies(harness: Harness) -> None:
    await start(harness, flows.hourly, flows.every_ten_all, flows.every_ten_none)
    now = _at("2030-01-01T09:59:30+01:00")
    scheduler = harness.scheduler(clock=lambda: now)
    assert await scheduler.tick(now) == []  # new schedules start from now: no past instants
    # 10:00 Paris comes: one hourly run; the ten-minute schedules fire too.
    started = await scheduler.tick(_at("2030-01-01T10:00:01+01:00"))
    hourly_id = schedule_run_id("hourly", 0, _at("2030-01-01T10:00:00+01:00"))
    assert hourly_id in started
    assert len(started) == 3
    # A second scheduler (or a restart) at the same instant starts nothing new.
    twin = harness.scheduler(clock=lambda: now)
    again = await twin.tick(_at("2030-01-01T10:00:02+01:00"))
    assert again == []
    # Two hours of downtime: `latest` fires only the most recent missed instant, `all` the last
    # three (max_catchup), `none` nothing that was missed.
    started = await scheduler.tick(_at("2030-01-01T12:05:00+01:00"))
    hourly_runs = [
        r for r in started if r == schedule_run_id("hourly", 0, _at("2030-01-01T12:00:00+01:00"))
    ]
    assert len(hourly_runs) == 1
    all_runs = {
        schedule_run_id("every_ten_all", 0, _at(f"2030-01-01T{t}+01:00"))
        for t in ("11:40:00", "11:50:00", "12:00:00")
    }
    assert all_runs <= set(started)
    assert len(started) == 1 + 3  # none: 0
    final = await harness.client.wait(hourly_id, timeout=20)
    assert final["status"] == "succeeded" and final["output"] == 2


async def test_paused_schedules_do_not_fire(harness: Harness) -> None:
    await start(harness, flows.hourly)
    scheduler = harness.scheduler(clock=lambda: 0.0)
    await scheduler.tick(_at("2030-01-01T09:30:00+01:00"))
    await scheduler.registry.set_paused("hourly", True)
    assert await scheduler.tick(_at("2030-01-01T10:00:05+01:00")) == []
    await scheduler.registry.set_paused("hourly", False)
    assert await scheduler.tick(_at("2030-01-01T11:00:05+01:00")) == [
        schedule_run_id("hourly", 0, _at("2030-01-01T11:00:00+01:00"))
    ]


async def test_a_requested_run_event_from_any_client_works(harness: Harness) -> None:
    """Not a trigger, but the same promise: a raw run.requested published by anyone."""
    await start(harness, flows.child_double)
    event = CloudEvent.create(
        RUN_REQUESTED,
        "elsewhere",
        {"workflow": "child_double", "input": {"x": 2}, "run_id": "raw-1"},
    )
    await harness.client.bus.publish(harness.topology.event_subject(RUN_REQUESTED, "raw-1"), event)
    final = await harness.client.wait("raw-1", timeout=20)
    assert final["output"] == 4
