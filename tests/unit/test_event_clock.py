"""When each event is applied (`runtime.clock`, `core.rules.applied_at`): its time in the
stream, never earlier than the last one its partition applied; per partition, as a projection
reads them all."""

from __future__ import annotations

from events.bus import Delivery
from events.topology import Topology
from orchestrator.runtime.clock import BatchClock

TOPOLOGY = Topology(namespace="ns", partitions=3)
T0_US = 1_800_000_000_000_000


def at(stored_us: int, partition: int = 0) -> Delivery:
    subject = f"ns.evt.{partition}.task.completed.r1"
    return Delivery(subject, {}, b"", 1, 1, None, stored_us=stored_us)


def test_an_event_is_applied_at_its_stream_time_never_before_the_last_one() -> None:
    clock = BatchClock({0: T0_US}, TOPOLOGY, 0)
    assert clock.now(at(T0_US + 250_000)) == (T0_US + 250_000) / 1e6
    # A leader change to a server whose clock is behind: the partition's time does not go back.
    assert clock.now(at(T0_US + 100_000)) == (T0_US + 250_000) / 1e6
    # Applied in the batch that emitted it (no stream time yet): at the last one's time.
    assert clock.now(at(0)) == (T0_US + 250_000) / 1e6
    assert clock.positions() == {"clock.p0": T0_US + 250_000}


def test_each_partition_keeps_its_own_time() -> None:
    clock = BatchClock({0: T0_US, 2: T0_US + 5_000_000}, TOPOLOGY, 0)
    assert clock.now(at(T0_US + 1_000_000, partition=2)) == (T0_US + 5_000_000) / 1e6
    assert clock.now(at(T0_US + 1_000_000, partition=0)) == (T0_US + 1_000_000) / 1e6
    assert clock.positions() == {"clock.p0": T0_US + 1_000_000, "clock.p2": T0_US + 5_000_000}
    assert clock.latest_us == T0_US + 5_000_000


def test_a_subject_outside_the_event_stream_counts_for_the_appliers_partition() -> None:
    clock = BatchClock({}, TOPOLOGY, 1)
    odd = Delivery("elsewhere.x", {}, b"", 1, 1, None, stored_us=T0_US)
    assert clock.partition(odd) == 1
    assert clock.partition(at(T0_US, partition=2)) == 2
