"""`SyncClient`: the blocking client, called from threads (as a Flask or Django app does) while the
orchestrator and a worker run on a real nats-server. The test's event loop runs those, so every
blocking call is made from a thread of its own, never from the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from events.errors import BusUnavailable
from events.testing import eventually
from orchestrator import (
    InvalidInput,
    Published,
    RunRefused,
    SyncClient,
    UnknownRun,
    UnknownWorkflow,
)
from tests.integration import flows, trigger_flows
from tests.integration.harness import Harness

T = TypeVar("T")


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest_asyncio.fixture
async def sync(harness: Harness) -> AsyncIterator[SyncClient]:
    await harness.start_orchestrator()
    await harness.start_worker([flows.inc, flows.block, flows.inc_after, *trigger_flows.TASKS])
    await harness.register(flows.chain, flows.long_running, trigger_flows.on_order)
    await harness.start_router()
    client = await blocking(SyncClient, harness.server.url, harness.topology, actor="tests")
    try:
        yield client
    finally:
        await blocking(client.close)


async def test_trigger_and_wait_from_threads(sync: SyncClient) -> None:
    results: dict[int, Any] = {}

    def run(start: int) -> None:
        run_id = sync.trigger("chain", {"start": start})
        results[start] = sync.wait(run_id, timeout=60)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join, 90)
    assert {start: r["output"] for start, r in results.items()} == {
        i: i + flows.CHAIN_LENGTH for i in range(4)
    }
    assert all(r["status"] == "succeeded" for r in results.values())
    # The run records who started it: the Python client, and the actor it was given.
    trigger = results[0]["trigger"]
    assert trigger["kind"] == "client" and trigger["source"] == "conveyor/client"
    assert trigger["by"] == "tests"
    listed = await blocking(sync.runs, "chain")
    assert {r["run_id"] for r in listed} >= {r["run_id"] for r in results.values()}


async def test_status_cancel_and_retry_refuse_what_the_cli_refuses(sync: SyncClient) -> None:
    assert await blocking(sync.status, "no-such-run") is None
    with pytest.raises(UnknownRun, match="no run 'no-such-run'"):
        await blocking(sync.cancel, "no-such-run")
    with pytest.raises(UnknownRun):
        await blocking(sync.retry, "not a run id")

    run_id = await blocking(sync.trigger, "long_running", {"seconds": 60})
    await eventually(lambda: blocking(sync.status, run_id), message=f"run {run_id} applied")
    with pytest.raises(RunRefused, match="cannot be retried"):
        await blocking(sync.retry, run_id)
    await blocking(sync.cancel, run_id, "enough")
    final = await blocking(sync.wait, run_id, 30)
    assert final["status"] == "cancelled"
    with pytest.raises(RunRefused, match="cannot be cancelled: it already cancelled"):
        await blocking(sync.cancel, run_id)
    # A cancelled run can be retried: it runs again under the same id (cancelled again here,
    # so that no task is left blocking the worker's shutdown).
    await blocking(sync.retry, run_id)

    async def running_again() -> bool:
        status = await blocking(sync.status, run_id)
        return status is not None and status["nodes"]["block"]["status"] == "running"

    await eventually(running_again, message="the retried run's task to run")
    await blocking(sync.cancel, run_id, "enough again")
    assert (await blocking(sync.wait, run_id, 30))["status"] == "cancelled"


async def test_bad_input_is_refused_before_anything_is_sent(sync: SyncClient) -> None:
    with pytest.raises(UnknownWorkflow, match="unknown workflow 'nope'"):
        await blocking(sync.trigger, "nope")
    with pytest.raises(InvalidInput, match="start"):
        await blocking(sync.trigger, "chain", {"start": "not a number"})
    assert await blocking(sync.runs, "chain") == []


async def test_publish_any_cloudevent_starts_the_workflows_it_triggers(
    sync: SyncClient,
) -> None:
    published = await blocking(
        sync.publish,
        "com.shop.order.created",
        {"order": "A-1"},
        source="shop/orders",
        id="order-A-1",
    )
    assert isinstance(published, Published) and not published.duplicate
    again = await blocking(
        sync.publish, "com.shop.order.created", {}, source="shop/orders", id="order-A-1"
    )
    assert again.duplicate  # the same event (source and id: its identity) is stored once
    other = await blocking(
        sync.publish, "com.shop.order.created", {}, source="shop/refunds", id="order-A-1"
    )
    assert not other.duplicate  # the same id from another source is another event

    async def started() -> list[dict[str, Any]] | None:
        runs = await blocking(sync.runs, "on_order")
        done = len(runs) == 2 and all(r["status"] == "succeeded" for r in runs)
        return runs if done else None

    runs = await eventually(started, message="two finished runs of on_order, one per source")
    triggers = []
    for summary in runs:
        run = await blocking(sync.status, summary["run_id"])
        assert run is not None and run["trigger"]["kind"] == "event"
        triggers.append(run["trigger"]["detail"])
    assert sorted(triggers, key=lambda t: t["source"]) == [
        {"type": "com.shop.order.created", "source": source, "id": "order-A-1"}
        for source in ("shop/orders", "shop/refunds")
    ]


async def test_a_closed_client_says_so_and_an_unreachable_server_is_clear(
    harness: Harness,
) -> None:
    client = await blocking(SyncClient, harness.server.url, harness.topology)
    await blocking(client.close)
    await blocking(client.close)  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await blocking(client.status, "anything")
    with pytest.raises(BusUnavailable):
        await blocking(SyncClient, "nats://127.0.0.1:1", harness.topology)
