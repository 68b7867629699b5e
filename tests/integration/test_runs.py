"""Runs end to end on a real nats-server: orchestrator and workers in-process, real sqlite."""

from __future__ import annotations

import json

from events import (
    RUN_REQUESTED,
    CloudEvent,
    RunRequested,
)
from events.testing import eventually
from tests.integration import flows
from tests.integration.harness import Harness
from workers.reporting import START_DEFER_S

ALL_TASKS = [
    flows.inc,
    flows.square,
    flows.total,
    flows.make_range,
    flows.flaky,
    flows.reject,
    flows.slow_first,
    flows.block,
    flows.inc_after,
    flows.score,
    flows.celebrate,
    flows.blob,
    flows.measure,
]


async def start(harness: Harness, *workflows: flows.Workflow, concurrency: int = 16) -> None:
    await harness.start_orchestrator()
    await harness.start_worker(ALL_TASKS, concurrency=concurrency)
    await harness.register(*workflows)


async def test_linear_chain_passes_each_output_to_the_next(harness: Harness) -> None:
    await start(harness, flows.chain)
    final = await harness.run(flows.chain, {"start": 7})
    assert final["status"] == "succeeded", final
    assert final["output"] == 7 + flows.CHAIN_LENGTH
    assert len(final["nodes"]) == flows.CHAIN_LENGTH
    # Shown in the spec's order, not the store's (which would put inc_10 before inc_2).
    assert list(final["nodes"]) == ["inc"] + [f"inc_{i}" for i in range(2, flows.CHAIN_LENGTH + 1)]
    assert all(n["status"] == "succeeded" and n["attempts"] == 1 for n in final["nodes"].values())


async def test_a_chain_of_inline_tasks_runs_like_a_threaded_one(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.start_worker([flows.inc.with_options(inline=True)])
    await harness.register(flows.chain)
    final = await harness.run(flows.chain, {"start": 3})
    assert final["status"] == "succeeded", final
    assert final["output"] == 3 + flows.CHAIN_LENGTH
    assert all(n["status"] == "succeeded" and n["attempts"] == 1 for n in final["nodes"].values())


async def test_fan_out_of_a_thousand_with_fan_in(harness: Harness) -> None:
    await start(harness, flows.fan_out, concurrency=64)
    final = await harness.run(flows.fan_out, {"n": flows.FAN_OUT}, timeout=120)
    assert final["status"] == "succeeded", final
    expected = sum(i * i for i in range(flows.FAN_OUT))
    assert final["output"] == {"count": flows.FAN_OUT, "sum": expected}
    squares = final["nodes"]["square"]
    assert squares["children"] == {"total": flows.FAN_OUT, "succeeded": flows.FAN_OUT}
    assert squares["output"] == [i * i for i in range(flows.FAN_OUT)]


async def test_retry_then_success(harness: Harness) -> None:
    await start(harness, flows.retry_then_succeed)
    final = await harness.run(flows.retry_then_succeed, {"succeed_on": 3})
    assert final["status"] == "succeeded", final
    assert final["output"] == {"attempt": 3}
    node = final["nodes"]["flaky"]
    assert node["attempts"] == 3
    errors = [a["error"] for a in node["attempt_history"]]
    assert [e["type"] if e else None for e in errors] == [
        "ConnectionError",
        "ConnectionError",
        None,
    ]
    assert "transient failure on attempt 1" in errors[0]["message"]


async def test_non_retryable_failure_fails_the_run_with_its_error(harness: Harness) -> None:
    await start(harness, flows.non_retryable)
    final = await harness.run(flows.non_retryable, {"payload": {"id": "42"}})
    assert final["status"] == "failed"
    assert final["error"]["type"] == "NonRetryableError"
    assert final["error"]["node_id"] == "reject"
    assert "is not acceptable" in final["error"]["message"]
    assert "Traceback" in final["error"]["traceback"]
    assert final["nodes"]["reject"]["attempts"] == 1  # despite retries=5
    # The same, through the status the CLI prints with --json.
    status = await harness.client.status(final["run_id"])
    assert status is not None and status["error"]["type"] == "NonRetryableError"


async def test_execution_timeout_is_retried(harness: Harness) -> None:
    await start(harness, flows.timeout_then_succeed)
    final = await harness.run(flows.timeout_then_succeed, {"label": "job"})
    assert final["status"] == "succeeded", final
    assert final["output"] == "job done on attempt 2"
    first = final["nodes"]["slow_first"]["attempt_history"][0]
    assert first["error"]["type"] == "TimeoutError"


async def test_cancellation_mid_run(harness: Harness) -> None:
    await start(harness, flows.long_running)
    run_id = await harness.client.trigger("long_running", {"seconds": 60})

    async def running() -> bool:
        status = await harness.client.status(run_id)
        return status is not None and status["nodes"]["block"]["status"] == "running"

    await eventually(running, message="the blocking task to start")
    await harness.client.cancel(run_id, "test says stop")
    final = await harness.client.wait(run_id, timeout=20)
    assert final["status"] == "cancelled"
    assert final["error"]["message"] == "test says stop"
    assert final["nodes"]["block"]["status"] == "cancelled"
    assert final["nodes"]["inc_after"]["status"] == "cancelled"


async def test_same_idempotency_key_makes_one_run(harness: Harness) -> None:
    await start(harness, flows.chain)
    first = await harness.client.trigger("chain", {"start": 1}, idempotency_key="order-17")
    second = await harness.client.trigger("chain", {"start": 1}, idempotency_key="order-17")
    assert first == second
    final = await harness.client.wait(first, timeout=60)
    assert final["status"] == "succeeded"
    # A raw publisher sending a second request with the same key (new event id) is also folded.
    raw = CloudEvent.create(
        RUN_REQUESTED, "elsewhere", RunRequested(workflow="chain", idempotency_key="order-17")
    )
    await harness.client.bus.publish(harness.topology.event_subject(RUN_REQUESTED, first), raw)
    runs = await harness.client.runs(workflow="chain")
    await eventually(lambda: _applied(harness), message="the raw request to be handled")
    assert [r["run_id"] for r in await harness.client.runs(workflow="chain")] == [first]
    assert len(runs) == 1


async def _applied(harness: Harness) -> bool:
    assert harness.engine is not None
    return harness.engine.metrics.events["stale"] + harness.engine.metrics.events["duplicate"] >= 1


async def test_condition_skips_guarded_nodes(harness: Harness) -> None:
    await start(harness, flows.guarded)
    low = await harness.run(flows.guarded, {"x": 0.2})
    high = await harness.run(flows.guarded, {"x": 0.9})
    assert low["status"] == high["status"] == "succeeded"
    assert low["nodes"]["celebrate"]["status"] == "skipped"
    assert low["output"] == {"score": 0.2, "celebration": None}
    assert high["output"] == {"score": 0.9, "celebration": "celebrated 0.9"}


async def test_malformed_events_are_parked_and_the_engine_keeps_going(harness: Harness) -> None:
    await start(harness, flows.chain)
    bus, topo = harness.client.bus, harness.topology
    subject = f"{topo.namespace}.evt.0.task.completed.somerun"
    await bus.publish_raw(subject, {"Nats-Msg-Id": "junk-1"}, b"\x00 not a cloud event")
    no_run = CloudEvent.create(
        "io.conveyor.task.completed",
        "test",
        {"run_id": "nosuchrun", "node_id": "x", "attempt": 1, "worker": "w"},
    )
    await bus.publish(f"{topo.namespace}.evt.0.task.completed.nosuchrun", no_run)
    bad_data = CloudEvent.create("io.conveyor.run.requested", "test", {"workflow": 12})
    await bus.publish(f"{topo.namespace}.evt.0.run.requested.x", bad_data)
    unknown = CloudEvent.create(
        "io.conveyor.run.requested", "test", RunRequested(workflow="no_such_flow")
    )
    await bus.publish(f"{topo.namespace}.evt.0.run.requested.y", unknown)

    final = await harness.run(flows.chain, {"start": 0})
    assert final["status"] == "succeeded"

    async def parked() -> list[dict[str, str]] | None:
        messages = await bus.stream_messages(topo.dlq_stream)
        return [dict(m.headers) for m in messages] if len(messages) >= 4 else None

    reasons = [
        h["Conveyor-Dlq-Reason"] for h in await eventually(parked, message="4 parked events")
    ]
    assert any("not a CloudEvent" in r for r in reasons), reasons
    assert any("unknown run 'nosuchrun'" in r for r in reasons), reasons
    assert any("workflow: Input should be a valid string" in r for r in reasons), reasons
    assert any("unknown workflow 'no_such_flow'" in r for r in reasons), reasons


async def test_status_json_shape(harness: Harness) -> None:
    await start(harness, flows.fan_out)
    final = await harness.run(flows.fan_out, {"n": 3})
    for key in ("run_id", "workflow", "status", "output", "error", "nodes"):
        assert key in final
    assert json.loads(json.dumps(final)) == final
    for node in final["nodes"].values():
        assert set(node) >= {"status", "attempts"}


async def test_retry_resumes_a_failed_run_from_its_failed_node(harness: Harness) -> None:
    await start(harness, flows.retry_then_succeed)
    # flaky gets 4 attempts (retries=3) but only succeeds on attempt 5: the run fails...
    failed = await harness.run(flows.retry_then_succeed, {"succeed_on": 5})
    assert failed["status"] == "failed"
    assert failed["nodes"]["flaky"]["attempts"] == 4
    # ...and a manual retry resumes it with a fresh budget; attempt numbers keep counting.
    await harness.client.retry(failed["run_id"])
    final = await harness.client.wait(failed["run_id"], timeout=30, newer_than=failed["updated_at"])
    assert final["status"] == "succeeded", final
    assert final["output"] == {"attempt": 5}
    assert final["error"] is None
    assert final["nodes"]["flaky"]["attempts"] == 5


async def test_payloads_over_the_inline_limit_go_by_claim_check(harness: Harness) -> None:
    await start(harness, flows.big_payloads)
    final = await harness.run(flows.big_payloads, {"n": 300_000})
    assert final["status"] == "succeeded", final
    assert final["output"] == {"length": 300_000}
    # The status answer stays small: the big value is summarised, not sent.
    shown = final["nodes"]["blob"]["output"]
    assert shown == {"truncated": True, "bytes": 300_002, "type": "str"}
    artifacts = await harness.client.bus.stream_size(f"OBJ_{harness.topology.artifacts_bucket}")
    assert artifacts >= 2  # the output, then the same bytes as the next input (+ metadata)


async def test_an_input_artifact_that_is_gone_fails_the_attempt_at_once_and_says_why(
    harness: Harness,
) -> None:
    """Not redelivered until the delivery limit and blamed on crashes: the same on every try."""
    await harness.start_orchestrator()
    await harness.register(flows.measure_given)
    run_id = await harness.client.trigger("measure_given", {"text": "y" * 300_000})

    async def dispatched() -> bool:
        status = await harness.client.status(run_id)
        return status is not None and status["nodes"]["measure"]["status"] == "dispatched"

    await eventually(dispatched, timeout=20, message="the claim-checked attempt to be dispatched")
    await harness.client.bus.js.purge_stream(f"OBJ_{harness.topology.artifacts_bucket}")
    await harness.start_worker(ALL_TASKS)
    final = await harness.client.wait(run_id, timeout=30)
    assert final["status"] == "failed", final
    [attempt] = final["nodes"]["measure"]["attempt_history"]
    assert attempt["error"]["type"] == "InputUnavailable", attempt
    assert "cannot be read" in attempt["error"]["message"]
    assert "does not exist" in attempt["error"]["message"]


async def test_a_short_task_folds_its_start_into_its_result_and_a_long_one_says_it_started(
    harness: Harness,
) -> None:
    """One event and one commit per short task; a task that runs for a while shows as running."""
    await start(harness, flows.chain, flows.long_running)
    # "Short" is the worker's start_defer_s of the task's own wall time (0.1 s): a trivial task
    # can take that long on a loaded machine (in a CI-like run a chain task sent task.started).
    # The short ones get a threshold they cannot reach; the long one the default again.
    [worker] = harness.workers
    worker.start_defer_s = 10.0
    final = await harness.run(flows.chain, {"start": 0})
    bus, topology = harness.client.bus, harness.topology
    events = await bus.stream_messages(topology.events_stream)
    run_subjects = [m.subject for m in events if m.subject.endswith(final["run_id"])]
    assert not [s for s in run_subjects if ".task.started." in s]
    for node in final["nodes"].values():
        [attempt] = node["attempt_history"]
        assert attempt["dispatched_at"] <= attempt["started_at"] <= attempt["finished_at"]

    worker.start_defer_s = START_DEFER_S
    run_id = await harness.client.trigger("long_running", {"seconds": 0.5})

    async def running() -> bool:
        status = await harness.client.status(run_id)
        return status is not None and status["nodes"]["block"]["status"] == "running"

    await eventually(running, timeout=20, message="the long task to show as running")
    assert (await harness.client.wait(run_id, timeout=30))["status"] == "succeeded"
