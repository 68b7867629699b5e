"""Conveyor on a real 3-node JetStream cluster: replicated topology, and losing a node mid-run.

Processes as users run them (`conveyor topology apply` once, then an orchestrator and worker
processes with `CONVEYOR_REPLICAS=3` and the seed list of all three servers); nodes killed
with -9. Every run must finish exactly once and nothing may be applied twice; the longest stall
(no task finishing anywhere) is printed, not asserted (it is a measurement: about a leader
election).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from events.errors import BusUnavailable
from events.testing import eventually
from orchestrator.client import Client
from tests.cluster.conftest import FLOWS, Deployment
from tests.cluster.flows import STEPS

# The workflows flows.py defines (its worker registers them one at a time).
FLOWS_WORKFLOWS = ("relay", "napper", "waiter", "held")

T = TypeVar("T")
RUNS = 80
NODE_DOWN_S = 10.0
TRIGGER_EVERY_S = 0.25


def _streams_and_buckets(deployment: Deployment) -> list[str]:
    topo = deployment.topology
    return [p.name for p in topo.streams()] + [
        f"KV_{topo.workflows_bucket}",
        f"OBJ_{topo.artifacts_bucket}",
    ]


async def test_topology_apply_replicates_everything_and_other_processes_only_check(
    deployment: Deployment,
) -> None:
    applied = deployment.run("topology", "apply")
    assert applied.returncode == 0, applied.stderr
    assert "replicas 3" in applied.stdout
    bus = await deployment.bus()
    try:
        for name in _streams_and_buckets(deployment):
            replicas, leader = await bus.stream_replicas(name)
            assert (name, replicas) == (name, 3) and leader in deployment.cluster.names
        # A worker started with a stale setting only checks: it never rewrites a stream.
        deployment.spawn("worker", FLOWS, env={"CONVEYOR_REPLICAS": "1"})
        await eventually(
            lambda: _registered(bus),
            timeout=60,
            message=f"the worker to start\n{deployment.logs()}",
        )
        for name in _streams_and_buckets(deployment):
            assert (await bus.stream_replicas(name))[0] == 3
        again = deployment.run("topology", "apply")
        assert "nothing to change" in again.stdout, again.stdout
    finally:
        await bus.close()


async def test_a_cli_run_started_as_the_workflows_leader_dies_waits_out_the_election(
    deployment: Deployment,
) -> None:
    """`conveyor run` opens the workflows bucket (a lookup its stream's leader answers) and
    publishes the request: started the moment that leader is killed -9, both land in the
    seconds the survivors take to elect another, and the CLI must wait them out, not fail
    with "nats: timeout"."""
    assert deployment.run("topology", "apply").returncode == 0
    deployment.spawn("orchestrator", "--db", str(deployment.workdir / "o.db"))
    deployment.spawn("worker", FLOWS)
    bus = await deployment.bus()
    try:
        await eventually(
            lambda: _registered(bus), timeout=60, message=f"worker ready\n{deployment.logs()}"
        )
        _, leader = await bus.stream_replicas(f"KV_{deployment.topology.workflows_bucket}")
        assert leader is not None
    finally:
        await bus.close()
    deployment.cluster.kill(leader)
    killed_at = time.monotonic()
    ran = await asyncio.to_thread(
        deployment.run, "run", "relay", "--wait", "--json", "--timeout", "90"
    )
    print(f"\nrun finished {time.monotonic() - killed_at:.1f} s after kill -9 of {leader}")
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n{deployment.logs()}"
    final = json.loads(ran.stdout)
    assert (final["status"], final["output"]) == ("succeeded", STEPS), final


async def test_processes_on_a_frozen_node_move_to_another_and_runs_go_on(
    deployment: Deployment,
) -> None:
    """SIGSTOP the node the orchestrator and the worker are connected to (given only its URL,
    they learn the others from it): its sockets stay open and nothing comes back, as when a
    machine is powered off or cut off. They must notice and move to another node (NATS pings),
    and a run started then must finish (measured: 17-36 s, elections included) — with
    nats-py's own pings (every 120 s, two unanswered) it waited four minutes."""
    assert deployment.run("topology", "apply").returncode == 0
    frozen = deployment.cluster.names[0]
    only_frozen = {
        "CONVEYOR_NATS_URL": f"nats://127.0.0.1:{deployment.cluster.client_ports[frozen]}"
    }
    deployment.spawn("orchestrator", "--db", str(deployment.workdir / "o.db"), env=only_frozen)
    deployment.spawn("worker", FLOWS, env=only_frozen)
    bus = await deployment.bus()
    try:
        await eventually(
            lambda: _registered(bus), timeout=60, message=f"worker ready\n{deployment.logs()}"
        )
    finally:
        await bus.close()
    deployment.cluster.freeze(frozen)
    frozen_at = time.monotonic()
    try:
        ran = await asyncio.to_thread(
            deployment.run, "run", "relay", "--wait", "--json", "--timeout", "90"
        )
        print(f"\nrun finished {time.monotonic() - frozen_at:.1f} s after SIGSTOP of {frozen}")
    finally:
        deployment.cluster.thaw(frozen)
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n{deployment.logs()}"
    final = json.loads(ran.stdout)
    assert (final["status"], final["output"]) == ("succeeded", STEPS), final


async def _registered(bus: object) -> bool:
    from events.bus import Bus
    from orchestrator.runtime.registry import Registry

    assert isinstance(bus, Bus)
    registry = Registry(bus)
    try:
        # Every workflow of flows.py: the worker registers them one at a time, so seeing the
        # first says nothing of the last.
        return all([await registry.latest_version(name) is not None for name in FLOWS_WORKFLOWS])
    except Exception:
        return False


async def test_losing_the_events_leader_then_the_tasks_leader_mid_workload(
    deployment: Deployment,
) -> None:
    assert deployment.run("topology", "apply").returncode == 0
    orchestrator = deployment.spawn("orchestrator", "--db", str(deployment.workdir / "o.db"))
    workers = [deployment.spawn("worker", FLOWS) for _ in range(2)]
    client = await Client.connect(deployment.cluster.url, deployment.topology)
    bus = client.bus
    try:
        await eventually(
            lambda: _registered(bus), timeout=60, message=f"workers ready\n{deployment.logs()}"
        )
        triggering = asyncio.create_task(_trigger_all(client))
        await asyncio.sleep(RUNS * TRIGGER_EVERY_S / 4)
        for stream in (deployment.topology.events_stream, deployment.topology.tasks_stream):
            _, leader = await _retrying(functools.partial(bus.stream_replicas, stream))
            assert leader is not None
            print(f"\n{time.time():.3f} kill -9 {leader}, leader of {stream}")
            deployment.cluster.kill(leader)
            await asyncio.sleep(NODE_DOWN_S)  # through the election and work on two nodes
            print(f"{time.time():.3f} restart {leader}")
            deployment.cluster.restart(leader)
            # Only once it caught up may another node go: two down is no quorum at all.
            await eventually(
                lambda: _all_current(bus, deployment),
                timeout=60,
                message="every stream's replicas to catch up",
            )
        run_ids = await triggering
        for run_id in run_ids:
            try:
                final = await _retrying(functools.partial(client.wait, run_id, timeout=60))
            except TimeoutError:
                raise AssertionError(
                    f"run {run_id} did not finish: {await client.status(run_id)}\n"
                    f"{await _consumers(deployment)}\n{deployment.logs()}"
                ) from None
            assert final["status"] == "succeeded", f"{final}\n{deployment.logs()}"
            assert final["output"] == STEPS
            attempts = {name: node["attempts"] for name, node in final["nodes"].items()}
            assert set(attempts.values()) == {1}, (run_id, attempts)  # nothing failed, no retry
        succeeded = await _retrying(lambda: bus.stream_messages(deployment.topology.events_stream))
        outcomes = Counter(
            m.subject.rsplit(".", 1)[1] for m in succeeded if ".run.succeeded." in m.subject
        )
        assert sorted(outcomes) == sorted(run_ids)
        assert set(outcomes.values()) == {1}  # one run.succeeded per run: applied once
        stall = _longest_stall(deployment.workdir / "tasks.log")
        print(f"\nlongest stall with no task finishing anywhere: {stall:.2f} s")
        assert orchestrator.poll() is None and all(w.poll() is None for w in workers)
    finally:
        await client.close()


async def _trigger_all(client: Client) -> list[str]:
    """Trigger RUNS runs at a steady pace through both elections: the client rides them out
    itself (an idempotency key per run all the same: a repeat gives the same run)."""
    run_ids = []
    for index in range(RUNS):
        key = f"relay-{index}"
        run_ids.append(await client.trigger("relay", {}, idempotency_key=key))
        await asyncio.sleep(TRIGGER_EVERY_S)
    return run_ids


async def _retrying(call: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except BusUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _all_current(bus: object, deployment: Deployment) -> bool:
    from events.bus import Bus

    assert isinstance(bus, Bus)
    names = _streams_and_buckets(deployment)
    return all([await bus.replicas_current(name) for name in names])


async def _consumers(deployment: Deployment) -> str:
    """What each consumer holds, for a failure message."""
    bus = await deployment.bus()
    try:
        lines = []
        for stream in (deployment.topology.events_stream, deployment.topology.tasks_stream):
            for info in await bus.js.consumers_info(stream):
                lines.append(
                    f"{stream}/{info.name}: pending {info.num_pending} ack-pending "
                    f"{info.num_ack_pending} waiting {info.num_waiting} "
                    f"delivered {info.delivered} ack-floor {info.ack_floor} "
                    f"leader {info.cluster.leader if info.cluster else None}"
                )
        return "\n".join(lines)
    finally:
        await bus.close()


def _longest_stall(log: Path) -> float:
    ends = sorted(float(line.split()[4]) for line in log.read_text().splitlines())
    gaps = sorted(((b - a, a) for a, b in itertools.pairwise(ends)), reverse=True)[:3]
    print("longest gaps (s, from):", [(round(g, 2), f"{a:.3f}") for g, a in gaps])
    return gaps[0][0] if gaps else 0.0
