"""Which consumers a takeover deletes, on a real nats-server: only its predecessors' (earlier
epochs, and the static mode's un-suffixed one). Seen under load before the fix: a replica
starved for seconds while it listed the consumers found the consumer of a *later* epoch (another
replica had claimed the partition meanwhile), deleted it, and left the rightful owner fetching
from nothing — the partition stuck, its runs waiting for ever."""

from __future__ import annotations

from pathlib import Path

from events import EmbeddedServer
from events.bus import Bus
from events.fencing import Tenure
from orchestrator.runtime.leases import LeaseRecord
from orchestrator.runtime.owned import LeaseHandle, OwnedPartition, PartitionParts
from orchestrator.runtime.ownership import LeaseSettings, Ownership
from orchestrator.runtime.store import Store


def _never_built(bus: Bus, store: Store, partition: int) -> PartitionParts:
    raise AssertionError("not built here")


async def _engine_consumer_of_epoch(bus: Bus, epoch: int) -> str:
    topo = bus.topology
    bus.tenure = Tenure(0, epoch, topo.fence_subject(0), 0)
    try:
        await bus.orchestrator_puller(0)
    finally:
        bus.tenure = None
    return f"{topo.orchestrator_consumer(0)}-e{epoch}"


async def test_a_takeover_deletes_earlier_epochs_consumers_never_a_later_ones(
    bus: Bus, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    earlier = await _engine_consumer_of_epoch(bus, 1)
    later = await _engine_consumer_of_epoch(bus, 9)

    async def connect(name: str) -> Bus:
        return await Bus.connect(nats_server.url, bus.topology, name=name)

    ownership = Ownership(
        bus, LeaseSettings(tmp_path, lease_s=2.0, replica="r1"), connect, _never_built
    )
    owned = OwnedPartition(LeaseHandle(bus, 0, LeaseRecord("r1", 5), 1), ownership.context)
    _, predecessors = await owned._consumer_starts(bus, None)

    names = [name for _, name in predecessors]
    assert earlier in names, names
    assert later not in names, (
        f"a stale takeover (epoch 5) would delete epoch 9's consumer: {names}"
    )
