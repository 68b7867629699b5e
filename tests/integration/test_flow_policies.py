"""Flow control's policies end to end on a real nats-server (docs/flow-control.md): a run over
its key's limit cancelled (`cancel_newest`) or cancelling the oldest (`cancel_oldest`), a task
limited per key across the runs of two workflows, and what a waiting node, a limiter and a
debounce show in status, the flow listing and Prometheus.

The worker runs in-process, so a task can be held open with an asyncio.Event until the test has
seen what it wants to see, and what it did is recorded with its own clock readings.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from events import CloudEvent
from events.testing import eventually
from orchestrator import workflow
from tests.integration.harness import Harness
from tests.integration.test_flow_control import most_at_once
from tests.integration.test_metrics import _free_port
from tests.integration.test_metrics import _scrape as scrape_metrics
from workers import task

# A task of key K holds until RELEASE[K] is set (a key with no event runs through).
RELEASE: dict[str, asyncio.Event] = {}
SPANS: dict[str, list[tuple[float, float, str]]] = defaultdict(list)  # key -> (start, end, what)


async def _held(what: str, key: str, ms: int) -> str:
    start = time.time()
    gate = RELEASE.get(key)
    if gate is not None:
        await gate.wait()
    await asyncio.sleep(ms / 1000)
    SPANS[key].append((start, time.time(), what))
    return f"{what} {key}"


@task
async def occupy(key: str) -> str:
    return await _held("occupy", key, 0)


@task(concurrency={"limit": 1, "key": "$.input.account"})
async def charge(account: str, ms: int = 30) -> str:
    return await _held("charge", account, ms)


@task(rate_limit={"limit": 1, "per": "1m", "key": "$.input.api_key"})
async def call_once_a_minute(api_key: str) -> str:
    return await _held("call", api_key, 0)


@task
async def step(item: int) -> str:
    return await _held("step", "map", 50)


@workflow
def bounded_map(items: list[int]) -> list[str]:
    return step.map(items, max_parallel=3)


@workflow(concurrency={"limit": 1, "key": "$.input.key", "on_limit": "cancel_newest"})
def newest_refused(key: str) -> str:
    return occupy(key)


@workflow(concurrency={"limit": 1, "key": "$.input.key", "on_limit": "cancel_oldest"})
def oldest_evicted(key: str) -> str:
    return occupy(key)


@workflow
def pay(account: str) -> str:
    return charge(account)


@workflow
def refund(account: str) -> str:
    return charge(account)


@workflow
def rated_call(api_key: str) -> str:
    return call_once_a_minute(api_key)


@workflow(on="com.example.sensor", debounce={"period": 60, "key": "$.subject"})
def settle(event: dict[str, Any], count: int) -> str:
    return occupy("settled")


WORKFLOWS = [newest_refused, oldest_evicted, pay, refund, rated_call, settle, bounded_map]


@pytest_asyncio.fixture
async def deployed(harness: Harness) -> AsyncIterator[tuple[Harness, int]]:
    """An orchestrator with its /metrics port, the trigger router and an in-process worker."""
    RELEASE.clear()
    SPANS.clear()
    port = _free_port()
    await harness.start_orchestrator(metrics_port=port)
    await harness.start_router()
    await harness.start_worker([occupy, charge, call_once_a_minute, step], concurrency=16)
    await harness.register(*WORKFLOWS)
    try:
        yield harness, port
    finally:
        for gate in RELEASE.values():
            gate.set()  # no task left waiting on the test's loop


async def node_is(harness: Harness, run_id: str, node: str, status: str) -> dict[str, Any]:
    async def there() -> dict[str, Any] | None:
        run = await harness.client.status(run_id)
        return run if run is not None and run["nodes"][node]["status"] == status else None

    return await eventually(there, timeout=30, message=f"{run_id}: {node} {status}")


async def run_is(harness: Harness, run_id: str, status: str) -> dict[str, Any]:
    async def there() -> dict[str, Any] | None:
        run = await harness.client.status(run_id)
        return run if run is not None and run["status"] == status else None

    return await eventually(there, timeout=30, message=f"run {run_id} {status}")


async def test_cancel_newest_cancels_a_run_over_its_keys_limit_at_once(
    deployed: tuple[Harness, int],
) -> None:
    harness, _ = deployed
    RELEASE["x"] = asyncio.Event()
    first = await harness.client.trigger("newest_refused", {"key": "x"})
    await node_is(harness, first, "occupy", "running")
    refused = await run_is(
        harness, await harness.client.trigger("newest_refused", {"key": "x"}), "cancelled"
    )
    assert "concurrency limit of 'newest_refused' for key 'x' reached" in str(refused["error"])
    assert "cancel_newest" in str(refused["error"])
    assert refused["nodes"]["occupy"]["status"] != "succeeded"
    # Another key has a limit of its own.
    other = await harness.run(newest_refused, {"key": "y"})
    assert other["status"] == "succeeded"
    RELEASE["x"].set()
    assert (await harness.client.wait(first, timeout=30))["status"] == "succeeded"
    assert [what for *_, what in SPANS["x"]] == ["occupy"]  # the refused run never ran a task


async def test_cancel_oldest_cancels_the_oldest_run_and_hands_its_slot_on(
    deployed: tuple[Harness, int],
) -> None:
    harness, _ = deployed
    RELEASE["x"] = asyncio.Event()
    oldest = await harness.client.trigger("oldest_evicted", {"key": "x"})
    await node_is(harness, oldest, "occupy", "running")
    other_key = await harness.client.trigger("oldest_evicted", {"key": "y"})
    await node_is(harness, other_key, "occupy", "succeeded")
    newer = await harness.client.trigger("oldest_evicted", {"key": "x"})
    evicted = await run_is(harness, oldest, "cancelled")
    assert f"a newer run ({newer}) takes its place (on_limit: cancel_oldest)" in str(
        evicted["error"]
    )
    # The newer run got the slot only once the oldest had let it go: never two at once.
    started = await node_is(harness, newer, "occupy", "running")
    [attempt] = started["nodes"]["occupy"]["attempt_history"]
    assert evicted["finished_at"] is not None and attempt["dispatched_at"] >= evicted["finished_at"]
    RELEASE["x"].set()
    assert (await harness.client.wait(newer, timeout=30))["status"] == "succeeded"
    assert (await harness.client.status(other_key) or {})["status"] == "succeeded"


async def test_a_task_limit_per_key_holds_across_the_runs_of_two_workflows(
    deployed: tuple[Harness, int],
) -> None:
    harness, _ = deployed
    accounts = ["acct-a", "acct-b"]
    run_ids = [
        await harness.client.trigger(name, {"account": accounts[n % 2]})
        for n in range(6)
        for name in ("pay", "refund")
    ]
    for run_id in run_ids:
        assert (await harness.client.wait(run_id, timeout=60))["status"] == "succeeded"
    overlap = {key: most_at_once([(s, e) for s, e, _ in SPANS[key]]) for key in accounts}
    assert overlap == {"acct-a": 1, "acct-b": 1}, SPANS
    # The keys are limited apart: the two accounts' charges did overlap each other.
    everyone = [(s, e) for key in accounts for s, e, _ in SPANS[key]]
    assert len(everyone) == 12 and most_at_once(everyone) == 2, SPANS


async def test_a_map_starts_at_most_max_parallel_children_and_says_how_many_wait(
    deployed: tuple[Harness, int],
) -> None:
    harness, _ = deployed
    RELEASE["map"] = asyncio.Event()
    run_id = await harness.client.trigger("bounded_map", {"items": list(range(9))})

    async def three_running() -> dict[str, Any] | None:
        run = await harness.client.status(run_id)
        node = (run or {}).get("nodes", {}).get("step", {})
        return node if node.get("children", {}).get("running") == 3 else None

    node = await eventually(three_running, timeout=30, message="3 children running")
    assert node["children_not_started"] == 6 and node["children"]["total"] == 9, node
    RELEASE["map"].set()
    final = await harness.client.wait(run_id, timeout=60)
    assert final["status"] == "succeeded" and len(final["output"]) == 9
    assert most_at_once([(s, e) for s, e, _ in SPANS["map"]]) == 3, SPANS["map"]


async def test_a_rate_limited_node_and_a_debounce_are_seen_in_status_flow_and_prometheus(
    deployed: tuple[Harness, int],
) -> None:
    harness, port = deployed
    before = time.time()
    first = await harness.run(rated_call, {"api_key": "k1"})
    assert first["status"] == "succeeded"
    second = await harness.client.trigger("rated_call", {"api_key": "k1"})
    queued = await node_is(harness, second, "call_once_a_minute", "queued")
    wait = queued["nodes"]["call_once_a_minute"]["waiting"]
    assert (wait["reason"], wait["limit"], wait["per_s"], wait["key"]) == ("rate", 1, 60.0, "k1")
    assert wait["position"] == 1 and before + 59 < wait["until"] < time.time() + 61, wait

    for n in range(3):
        event = CloudEvent.create("com.example.sensor", "test", {"n": n}, subject="s1")
        await harness.client.bus.publish(
            harness.client.bus.topology.ingest_subject(event.type), event
        )

    async def collecting() -> list[dict[str, Any]] | None:
        flows = await harness.client.flows()
        held = [f for f in flows if f["kind"] == "collector" and f["count"] == 3]
        return flows if held else None

    flows = await eventually(collecting, timeout=30, message="the debounce holding 3 events")
    by_kind = {f["kind"]: f for f in flows}
    assert (by_kind["collector"]["workflow"], by_kind["collector"]["key"]) == ("settle", "s1")
    assert by_kind["collector"]["timer_due"] > time.time() + 50
    limiter = by_kind["limiter"]
    assert (limiter["scope"], limiter["name"], limiter["key"]) == (
        "rate",
        "call_once_a_minute",
        "k1",
    )
    assert (limiter["holding"], limiter["waiting"]) == (1, 1)

    # The gauges are refreshed now and then (not per scrape): polled until they show it.
    rate = (("key", "k1"), ("name", "call_once_a_minute"), ("scope", "rate"))
    debounce = (("key", "s1"), ("mode", "debounce"), ("workflow", "settle"))
    wanted = {
        ("conveyor_flow_holding", rate): 1,
        ("conveyor_flow_waiting", rate): 1,
        ("conveyor_flow_limit", rate): 1,
        ("conveyor_flow_collecting", debounce): 3,
    }

    async def gauges() -> dict[Any, float] | None:
        metrics = await scrape_metrics(port)
        return metrics if all(metrics.get(k) == v for k, v in wanted.items()) else None

    await eventually(gauges, timeout=30, message=f"the flow gauges to read {wanted}")
    await harness.client.cancel(second)
    await run_is(harness, second, "cancelled")
