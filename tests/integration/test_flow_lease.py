"""Flow control in lease mode: two `conveyor orchestrator --lease` replicas share three
partitions (the runs of one key live on all three, the key's limiter on one of them), and the
replica that holds the limiter's partition is killed -9 mid-burst. The successor restores the
partition from its snapshot and the event stream's tail: the limit still holds, every run
finishes, each task ran once. The same for a rate-limited task: every run finishes.

Under load (1 s leases, starved replicas) partitions change hands several times during the
burst. Before the fixes this test came with, it failed 4 times in 7: a stale takeover deleted
the consumer of a later epoch (the partition stuck), and a successor re-deciding the limiter's
grants with other batch ends than the deposed owner's (the same-partition shortcut) left a run
whose task had already run waiting for ever."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from events import EmbeddedServer, Topology
from events.testing import eventually
from orchestrator.core.limits import limiter_id
from orchestrator.runtime.leases import Table
from tests.integration import flow_flows as flows
from tests.integration.harness import Harness
from tests.integration.test_flow_control import (
    KEYS,
    check_concurrency,
    concurrency_burst,
    finished,
    recorded,
    workers,
)

RUNS = 90


def replica(harness: Harness, name: str) -> subprocess.Popen[bytes]:
    return harness.spawn(
        "orchestrator",
        "--lease",
        "--replica-id",
        name,
        "--state-dir",
        str(harness.workdir / f"state-{name}"),
        "--lease-seconds",
        "1",
        "--snapshot-interval",
        "0.5",
    )


async def owners(harness: Harness) -> dict[int, str | None]:
    bus = harness.client.bus
    entries = await bus.kv_entries(bus.topology.leases_bucket)
    table = {key: (entry.value, entry.revision) for key, entry in entries.items()}
    return Table.parse(table, bus.topology.partitions).owners()


Replicas = dict[str, subprocess.Popen[bytes]]


async def two_replicas_and_workers(harness: Harness) -> tuple[Replicas, dict[int, str | None]]:
    """Replicas r1 and r2, once each holds partitions (the lease table then), and two workers."""
    procs = {name: replica(harness, name) for name in ("r1", "r2")}

    async def shared() -> dict[int, str | None] | None:
        table = await owners(harness)
        return table if set(table.values()) == {"r1", "r2"} else None

    table = await eventually(shared, timeout=60, message=f"two replicas\n{harness.logs()}")
    await workers(harness, 2)
    return procs, table


def kill_owner(procs: Replicas, table: dict[int, str | None], partition: int) -> str:
    """kill -9 the replica that owns `partition`; its name."""
    victim = table[partition]
    assert victim is not None
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait(10)
    return victim


async def test_a_limit_holds_across_lease_replicas_and_a_kill_9_of_the_limiters_owner(
    nats_server: EmbeddedServer, topology: Topology, tmp_path: Path
) -> None:
    sharded = Topology(namespace=f"{topology.namespace}_lease", partitions=3)
    harness = await Harness(nats_server, sharded, tmp_path).open()
    try:
        await harness.register(flows.per_key)
        procs, table = await two_replicas_and_workers(harness)
        run_ids = await concurrency_burst(harness, RUNS)
        assert {sharded.partition(r) for r in run_ids} == {0, 1, 2}
        await recorded(harness, "hold", RUNS // 4, timeout=60)

        # kill -9 (and lose the disk of) the owner of a busy limiter's partition, mid-burst
        limiter = limiter_id("run", "per_key", KEYS[0])
        victim = kill_owner(procs, table, sharded.partition(limiter))
        assert len(flows.records(harness.workdir, "hold")) < RUNS, "the burst ended too soon"

        ended = await finished(harness, "per_key", RUNS, timeout=120)
        assert {r["status"] for r in ended} == {"succeeded"}, harness.logs()
        check_concurrency(harness, RUNS)
        survivor = ({"r1", "r2"} - {victim}).pop()
        assert set((await owners(harness)).values()) == {survivor}
    finally:
        await harness.close()


async def test_a_rate_limit_through_a_kill_9_of_the_limiters_owner(
    nats_server: EmbeddedServer, topology: Topology, tmp_path: Path
) -> None:
    sharded = Topology(namespace=f"{topology.namespace}_rate", partitions=3)
    harness = await Harness(nats_server, sharded, tmp_path).open()
    try:
        await harness.register(flows.rated)
        procs, table = await two_replicas_and_workers(harness)
        runs = [await harness.client.trigger("rated", {"n": n}) for n in range(80)]
        await recorded(harness, "call", 20, timeout=60)
        kill_owner(procs, table, sharded.partition(limiter_id("rate", "call_api", "")))
        assert len(flows.records(harness.workdir, "call")) < 80, "the burst ended too soon"
        ended = await finished(harness, "rated", 80, timeout=120)
        assert {r["status"] for r in ended} == {"succeeded"}, harness.logs()
        assert len(runs) == 80
    finally:
        await harness.close()
