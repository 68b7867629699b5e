"""The KEDA contract, on a real 3-node cluster: what KEDA's `nats-jetstream` scaler reads for a
worker pool — `num_pending + num_ack_pending` of the task's consumer, from the `/jsz` of the
server that leads that consumer — equals the tasks queued plus those in flight, from before
any worker has ever run (registering the workflow created the consumer) until drained (0)."""

from __future__ import annotations

from typing import Any

from events.testing import eventually
from orchestrator.client import Client
from tests.cluster.conftest import FLOWS, Deployment

TASKS = 25
IN_FLIGHT = 3


def _keda_lag(deployment: Deployment, leader: str, consumer: str) -> int | None:
    """KEDA's reading: the consumer's entry in its leader's /jsz (account $G, no accounts)."""
    jsz = deployment.cluster.jsz(leader, accounts="true", consumers="true", config="true")
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream.get("name") != deployment.topology.tasks_stream:
                continue
            for entry in stream.get("consumer_detail", []):
                if entry.get("name") == consumer:
                    return int(entry["num_pending"]) + int(entry["num_ack_pending"])
    return None


async def _leader(client: Client, deployment: Deployment, consumer: str) -> str:
    info: Any = await client.bus.js.consumer_info(deployment.topology.tasks_stream, consumer)
    assert info.cluster is not None and info.cluster.leader
    return str(info.cluster.leader)


async def test_the_lag_keda_reads_is_queued_plus_in_flight(deployment: Deployment) -> None:
    assert deployment.run("topology", "apply").returncode == 0
    registered = deployment.run("register", FLOWS)
    assert registered.returncode == 0, registered.stderr
    consumer = deployment.topology.task_consumer("default", "gated")
    deployment.spawn("orchestrator", "--db", str(deployment.workdir / "o.db"))
    client = await Client.connect(deployment.cluster.url, deployment.topology)
    try:
        leader = await _leader(client, deployment, consumer)
        assert _keda_lag(deployment, leader, consumer) == 0  # exists before any worker ran
        run_ids = [await client.trigger("held", {"x": n}) for n in range(TASKS)]

        async def lag_is(expected: int) -> bool:
            return _keda_lag(deployment, leader, consumer) == expected

        await eventually(lambda: lag_is(TASKS), timeout=30, message=f"{TASKS} queued tasks")
        (deployment.workdir / "gate").touch()  # tasks taken now stay in flight
        deployment.spawn("worker", FLOWS, "--concurrency", str(IN_FLIGHT))

        async def in_flight() -> bool:
            info: Any = await client.bus.js.consumer_info(
                deployment.topology.tasks_stream, consumer
            )
            return int(info.num_ack_pending) == IN_FLIGHT

        await eventually(in_flight, timeout=60, message=f"{IN_FLIGHT} tasks in flight")
        # Queued plus in flight: what a pool scaled on this consumer still has to do.
        assert _keda_lag(deployment, leader, consumer) == TASKS
        (deployment.workdir / "gate").unlink()
        for run_id in run_ids:
            assert (await client.wait(run_id, timeout=120))["status"] == "succeeded"
        await eventually(lambda: lag_is(0), timeout=30, message="the lag to drain to 0")
    finally:
        await client.close()
