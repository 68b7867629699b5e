"""Each partition's newest snapshot is recorded on its own key, as soon as it is uploaded, whatever
happens to the lease write after it (lease mode; docs/failover.md, "Snapshots and the tail").

The defect this pins (seen in the cluster test of retention): a replica, starved, claimed its own
partition again as a later epoch while the earlier epoch was being handed over; the hand-over's
lease write then failed, and the snapshot just uploaded — named only by that lease write — was
never recorded. The successor restored nothing, replayed what the stream still held (the run's
start had aged out) and parked the run's task results "for unknown run": an accepted run lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from events import EmbeddedServer, Topology
from events.bus import Bus
from events.testing import eventually, unique_namespace
from orchestrator import roles, workflow
from orchestrator.runtime.leases import LeaseRecord, SnapshotRef, partition_key
from orchestrator.runtime.owned import LeaseHandle, OwnedPartition, PartitionParts
from orchestrator.runtime.ownership import LeaseSettings, Ownership
from orchestrator.runtime.snapshots import Snapshots
from orchestrator.runtime.store import Store
from tests.integration.flows import inc
from tests.integration.harness import Harness

RETENTION_S = 2.0  # how long the event stream keeps an event here


@workflow
def two_incs(start: int = 0) -> int:
    return inc(inc(start))


@pytest.fixture
def topology() -> Topology:
    return Topology(
        namespace=unique_namespace("rec"),
        task_ack_wait_s=2.0,
        event_max_age_s=RETENTION_S,
        duplicate_window_s=RETENTION_S,  # (JetStream wants it within the retention)
    )


@pytest_asyncio.fixture
async def buses(nats_server: EmbeddedServer, harness: Harness) -> AsyncIterator[list[Bus]]:
    """Connections the test's replicas open (closed at the end)."""
    opened: list[Bus] = []
    yield opened
    for bus in opened:
        await bus.close()


def _replica(
    name: str, harness: Harness, buses: list[Bus], bus: Bus, lease_s: float = 1.0
) -> Ownership:
    async def connect(connection: str) -> Bus:
        opened = await Bus.connect(harness.server.url, harness.topology, name=connection)
        buses.append(opened)
        return opened

    def build(partition_bus: Bus, store: Store, partition: int) -> PartitionParts:
        return roles.partition_parts(partition_bus, store, partition, triggers=False)

    settings = LeaseSettings(
        state_dir=harness.workdir / name, lease_s=lease_s, snapshot_interval_s=3600, replica=name
    )
    return Ownership(bus, settings, connect, build)


async def _aged_out(bus: Bus, sequence: int) -> bool:
    info = await bus.js.stream_info(bus.topology.events_stream)
    return int(info.state.first_seq or 0) > sequence


async def test_a_snapshot_whose_lease_write_failed_is_what_the_successor_restores(
    harness: Harness, buses: list[Bus]
) -> None:
    bus = harness.client.bus
    topo = harness.topology
    await harness.register(two_incs)
    leases = topo.leases_bucket
    # r1 claimed partition 0 as epoch 1 and serves it; its rounds never run again (starved),
    # and it takes no periodic snapshot (the interval is an hour).
    r1 = _replica("r1", harness, buses, bus)
    claimed = LeaseRecord("r1", 1)
    revision = await bus.kv_create(leases, partition_key(0), claimed.encode())
    assert revision is not None
    owned = OwnedPartition(LeaseHandle(bus, 0, claimed, revision), r1.context)
    r1.held[0] = owned
    holding = asyncio.create_task(r1._hold(owned))
    await eventually(lambda: _true(owned.running), timeout=20, message="r1 to serve p0")

    # A run is accepted and started (its first task dispatched; no worker serves it yet).
    run_id = await harness.client.trigger("two_incs", {"start": 40})
    started = await bus.last_sequence(topo.events_stream)
    await eventually(
        lambda: _status_is(harness, run_id, "running"), timeout=20, message="the run started"
    )

    # r1 claims its own partition again, as a later epoch (what a starved replica's round did),
    # and its epoch 1 is handed over meanwhile: the snapshot is uploaded, the lease write
    # that follows it fails.
    later = await bus.kv_update(
        leases, partition_key(0), LeaseRecord("r1", 2).encode(), last=revision
    )
    assert later is not None
    owned.request_hand_over()
    await asyncio.wait_for(holding, 30)
    assert owned.lost is not None and "claimed again" in owned.lost, owned.lost
    assert await bus.snapshot_names("p0/"), "the hand-over uploaded no snapshot"

    # r1 is gone for good (its epoch 2 never ran); the run's start ages out of the stream...
    await eventually(
        lambda: _aged_out(bus, started), timeout=RETENTION_S * 10, message="the retention"
    )
    # ...and r2 takes the partition over once r1's lease expired.
    r2 = _replica("r2", harness, buses, bus)
    await r2.start()
    serving = asyncio.create_task(r2.run())
    try:
        await eventually(lambda: _true(r2.owned() == [0]), timeout=30, message="r2 to serve p0")
        await harness.start_worker([inc])
        try:
            final = await harness.client.wait(run_id, timeout=30)
        except TimeoutError:
            status = await harness.client.status(run_id)
            raise AssertionError(f"run {run_id} was lost in the takeover: {status}") from None
        assert final["status"] == "succeeded" and final["output"] == 42, final
    finally:
        r2.stop()
        await asyncio.wait_for(serving, 30)
        await r2.drain()


async def _true(value: bool) -> bool:
    return value


async def _status_is(harness: Harness, run_id: str, status: str) -> bool:
    found = await harness.client.status(run_id)
    return found is not None and found["status"] == status


async def test_an_older_snapshot_never_replaces_the_recorded_one(bus: Bus, tmp_path: Path) -> None:
    """Whoever writes last: the record names the snapshot covering the latest sequence."""
    topo = bus.topology
    newest = SnapshotRef("p0/e2/s50", 50, 1, epoch=2, owner="r2")
    await bus.put_snapshot(newest.name, b"x")
    fresh = Snapshots(bus, tmp_path / "fresh.db", 0, 2, "orchestrator-p0-e2", "r2")
    assert await fresh.record(newest) == newest
    # A deposed owner (epoch 1), late, takes a snapshot covering less: it is uploaded, not
    # recorded, and pruned (the recorded one, of a later epoch, stays).
    await (await Store.open(tmp_path / "stale.db")).close()
    await bus.js.add_consumer(
        topo.events_stream,
        durable_name="orchestrator-p0-e1",
        filter_subject=f"{topo.namespace}.evt.0.>",
    )
    stale = Snapshots(bus, tmp_path / "stale.db", 0, 1, "orchestrator-p0-e1", "r1")
    ref, recorded, _ = await stale.take()
    assert ref.seq < newest.seq and not recorded
    assert await stale.newest() == newest
    assert await bus.snapshot_names("p0/") == [newest.name]
    # Writers racing (compare-and-set on the key's revision): the latest sequence wins, in
    # whichever order their writes land; an equal sequence does not replace it either.
    racing = [SnapshotRef(f"p0/e{e}/s{s}", s, 1, epoch=e) for e, s in ((1, 60), (3, 55), (2, 70))]
    await asyncio.gather(*(fresh.record(r) for r in racing))
    assert await fresh.newest() == racing[2]
    assert await stale.record(SnapshotRef("p0/e4/s70", 70, 1, epoch=4)) == racing[2]
    assert await fresh.newest() == racing[2]
