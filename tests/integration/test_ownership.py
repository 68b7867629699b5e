"""A lease-mode replica's ownership on a real nats-server: what it does with a partition whose
takeover fails, when its lease was taken meanwhile (it was stopped or starved while it took
over, and another replica claimed the expired lease)."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from events import EmbeddedServer
from events.bus import Bus
from orchestrator.runtime.leases import LeaseRecord, SnapshotRef, partition_key
from orchestrator.runtime.owned import LeaseHandle, OwnedPartition, PartitionParts
from orchestrator.runtime.ownership import LeaseSettings, Ownership
from orchestrator.runtime.store import Store


def _never_built(bus: Bus, store: Store, partition: int) -> PartitionParts:
    raise AssertionError("the takeover fails before the partition's components are built")


async def test_a_takeover_failing_after_its_lease_was_taken_loses_the_partition(
    bus: Bus, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    bucket, key = bus.topology.leases_bucket, partition_key(0)
    missing = SnapshotRef("p0/e0/s0", 0, 10)  # the takeover's restore fails: it does not exist
    free = await bus.kv_create(bucket, key, LeaseRecord(None, 0, missing).encode())
    assert free is not None
    claimed = LeaseRecord("r1", 1, missing)
    revision = await bus.kv_update(bucket, key, claimed.encode(), last=free)
    assert revision is not None
    # r1 is stopped mid-takeover past its lease; r2 claims the expired lease
    taken = LeaseRecord("r2", 2, missing)
    assert await bus.kv_update(bucket, key, taken.encode(), last=revision) is not None

    async def connect(name: str) -> Bus:
        return await Bus.connect(nats_server.url, bus.topology, name=name)

    ownership = Ownership(
        bus, LeaseSettings(state_dir=tmp_path, lease_s=2.0, replica="r1"), connect, _never_built
    )
    owned = OwnedPartition(LeaseHandle(bus, 0, claimed, revision), ownership.context)
    ownership.held[0] = owned
    with capture_logs() as logs:
        await ownership._hold(owned)

    # r1, woken, says it lost the partition (not that it gives back what is no longer its own)
    assert owned.lost is not None and owned.lost.startswith("its lease was taken"), owned.lost
    events = [entry["event"] for entry in logs]
    assert "stopped owning the partition" in events, events
    assert not any("giving it back" in event for event in events), events
    assert ownership.metrics.events["lost"] == 1 and 0 not in ownership.held
    entry = await bus.kv_get(bucket, key)  # and it wrote nothing over r2's lease
    assert entry is not None and LeaseRecord.decode(entry.value) == taken
