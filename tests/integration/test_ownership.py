"""A lease-mode replica's ownership on a real nats-server: what it does with a partition whose
lease was taken while it was still taking it over or handing it over (it was stopped or starved
past its lease, and another replica claimed it) — it says it lost the partition and writes
nothing over the new owner's lease; and it never claims a partition again while it is still
handing it over itself."""

from __future__ import annotations

import time
from pathlib import Path

from structlog.testing import capture_logs

from events import EmbeddedServer
from events.bus import Bus
from events.fencing import Tenure
from orchestrator.runtime.leases import (
    LeaseRecord,
    SnapshotRef,
    Table,
    partition_key,
    snapshot_key,
)
from orchestrator.runtime.owned import LeaseHandle, OwnedPartition, PartitionParts
from orchestrator.runtime.ownership import LeaseSettings, Ownership
from orchestrator.runtime.snapshots import Snapshots
from orchestrator.runtime.store import Store

MISSING = SnapshotRef("p0/e0/s0", 0, 10)  # a takeover's restore of it fails: it does not exist
TAKEN = LeaseRecord("r2", 2)


def _never_built(bus: Bus, store: Store, partition: int) -> PartitionParts:
    raise AssertionError("the takeover fails before the partition's components are built")


async def _claimed_by_r1_then_taken_by_r2(
    bus: Bus, nats_server: EmbeddedServer, tmp_path: Path
) -> tuple[Ownership, LeaseHandle]:
    """r1's ownership, and its handle on partition 0's lease (epoch 1), which r2 then took."""
    bucket, key = bus.topology.leases_bucket, partition_key(0)
    assert await bus.kv_create(bucket, snapshot_key(0), MISSING.encode()) is not None
    free = await bus.kv_create(bucket, key, LeaseRecord(None, 0).encode())
    assert free is not None
    claimed = LeaseRecord("r1", 1)
    revision = await bus.kv_update(bucket, key, claimed.encode(), last=free)
    assert revision is not None
    assert await bus.kv_update(bucket, key, TAKEN.encode(), last=revision) is not None

    async def connect(name: str) -> Bus:
        return await Bus.connect(nats_server.url, bus.topology, name=name)

    settings = LeaseSettings(state_dir=tmp_path, lease_s=2.0, replica="r1")
    ownership = Ownership(bus, settings, connect, _never_built)
    return ownership, LeaseHandle(bus, 0, claimed, revision)


async def _lease_is_r2s(bus: Bus) -> bool:
    entry = await bus.kv_get(bus.topology.leases_bucket, partition_key(0))
    return entry is not None and LeaseRecord.decode(entry.value) == TAKEN


async def test_a_takeover_failing_after_its_lease_was_taken_loses_the_partition(
    bus: Bus, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    ownership, handle = await _claimed_by_r1_then_taken_by_r2(bus, nats_server, tmp_path)
    owned = OwnedPartition(handle, ownership.context)
    ownership.held[0] = owned
    with capture_logs() as logs:
        await ownership._hold(owned)  # its takeover fails: the snapshot does not exist

    # r1 says it lost the partition (not that it gives back what is no longer its own)
    assert owned.lost is not None and owned.lost.startswith("its lease was taken"), owned.lost
    events = [entry["event"] for entry in logs]
    assert "stopped owning the partition" in events, events
    assert not any("giving it back" in event for event in events), events
    assert ownership.metrics.events["lost"] == 1 and 0 not in ownership.held
    assert await _lease_is_r2s(bus)


async def test_a_hand_over_after_its_lease_was_taken_loses_the_partition(
    bus: Bus, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    ownership, handle = await _claimed_by_r1_then_taken_by_r2(bus, nats_server, tmp_path)
    owned = OwnedPartition(handle, ownership.context)
    topo = bus.topology
    bus.tenure = Tenure(0, 1, topo.fence_subject(0), 0)  # the engine's consumer of epoch 1
    await bus.orchestrator_puller(0)
    bus.tenure = None
    db = tmp_path / "store.db"
    await (await Store.open(db)).close()
    consumer = Tenure(0, 1, "", 0).consumer(topo.orchestrator_consumer(0))
    owned.snapshots = Snapshots(bus, db, 0, 1, consumer)
    owned.request_hand_over()
    with capture_logs() as logs:
        assert not await owned.complete_hand_over(2.0)

    assert owned.lost is not None and owned.lost.startswith("its lease was claimed"), owned.lost
    assert "stopped owning the partition" in [entry["event"] for entry in logs]
    assert await _lease_is_r2s(bus)


async def test_a_replica_does_not_claim_again_what_it_is_still_handing_over(
    bus: Bus, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    """Its lease still names it while it drains: a claim of its own would fence the draining
    epoch out and lose the hand-over's last snapshot (a starved replica's round did)."""
    bucket, key = bus.topology.leases_bucket, partition_key(0)
    record = LeaseRecord("r1", 1)
    revision = await bus.kv_create(bucket, key, record.encode())
    assert revision is not None

    async def connect(name: str) -> Bus:
        return await Bus.connect(nats_server.url, bus.topology, name=name)

    settings = LeaseSettings(state_dir=tmp_path, lease_s=2.0, replica="r1")
    ownership = Ownership(bus, settings, connect, _never_built)
    owned = OwnedPartition(LeaseHandle(bus, 0, record, revision), ownership.context)
    owned.running = True  # serving until its components have drained
    owned.request_hand_over()
    ownership.held[0] = owned
    entries = await bus.kv_entries(bucket)
    table = Table.parse({k: (e.value, e.revision) for k, e in entries.items()}, 1)
    now = time.monotonic()
    ownership.observer.observe(table.revisions(), now)
    await ownership._act(table, now)

    assert ownership.held[0] is owned
    entry = await bus.kv_get(bucket, key)
    assert entry is not None and entry.revision == revision
