"""Partition leases with a driven clock: when a lease counts as expired, who is alive, what a
replica claims and hands over (orchestrator.runtime.leases), and the fence's pure helpers."""

from __future__ import annotations

import pytest

from events.fencing import Tenure, epoch_of, marker, marker_epoch
from orchestrator.runtime.leases import (
    Lease,
    LeaseRecord,
    Observer,
    Plan,
    SnapshotRef,
    Table,
    forgotten_members,
    live_members,
    member_key,
    partition_key,
    plan,
    quota,
    snapshot_key,
)

LEASE = 3.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def _table(partitions: int, records: dict[int, tuple[LeaseRecord, int]], members: dict[str, int]):
    entries = {partition_key(p): (r.encode(), rev) for p, (r, rev) in records.items()}
    entries.update({member_key(m): (b"{}", rev) for m, rev in members.items()})
    return Table.parse(entries, partitions)


def test_a_lease_expires_after_a_whole_period_of_the_same_revision() -> None:
    clock, observer = Clock(), Observer(LEASE)
    observer.observe({"p.0": 7}, clock.now)
    clock.advance(LEASE - 0.01)
    observer.observe({"p.0": 7}, clock.now)
    assert not observer.expired("p.0", clock.now)
    clock.advance(0.01)
    assert observer.expired("p.0", clock.now)


def test_a_renewal_restarts_the_period() -> None:
    clock, observer = Clock(), Observer(LEASE)
    observer.observe({"p.0": 7}, clock.now)
    clock.advance(LEASE * 0.9)
    observer.observe({"p.0": 8}, clock.now)  # the holder bumped the revision
    clock.advance(LEASE * 0.9)
    assert not observer.expired("p.0", clock.now)
    assert observer.silent_for("p.0", clock.now) == pytest.approx(LEASE * 0.9)


def test_a_failed_read_or_write_forgets_every_silence_watched() -> None:
    """While JetStream elects a leader nobody can renew: silence watched before a failure never
    counts afterwards, however long it lasted."""
    clock, observer = Clock(), Observer(LEASE)
    observer.observe({"p.0": 7, "m.a": 3}, clock.now)
    clock.advance(LEASE * 5)
    observer.blind()
    assert not observer.expired("p.0", clock.now)
    observer.observe({"p.0": 7, "m.a": 3}, clock.now)  # the same revisions, after the outage
    clock.advance(LEASE / 2)
    assert not observer.expired("p.0", clock.now)
    clock.advance(LEASE / 2)
    assert observer.expired("p.0", clock.now)


def test_a_key_never_watched_has_not_expired() -> None:
    assert not Observer(LEASE).expired("p.3", 1e9)


def test_members_alive_are_those_whose_heartbeat_moved_within_a_lease() -> None:
    clock, observer = Clock(), Observer(LEASE)
    table = _table(4, {}, {"a": 1, "b": 2, "c": 3})
    observer.observe(table.revisions(), clock.now)
    clock.advance(LEASE / 2)
    table = _table(4, {}, {"a": 10, "b": 2, "c": 11})
    observer.observe(table.revisions(), clock.now)
    clock.advance(LEASE / 2)
    assert live_members(table, observer, "me", clock.now) == {"me", "a", "c"}
    assert forgotten_members(table, observer, clock.now) == []
    clock.advance(LEASE * 10)
    assert set(forgotten_members(table, observer, clock.now)) == {"a", "b", "c"}


def test_quota_is_the_ceiling_of_partitions_over_live_replicas() -> None:
    assert [quota(4, n) for n in (0, 1, 2, 3, 4, 5)] == [4, 4, 2, 2, 1, 1]


def test_a_lone_replica_claims_every_free_partition_in_its_order_of_preference() -> None:
    clock, observer = Clock(), Observer(LEASE)
    table = _table(4, {}, {"me": 1})
    observer.observe(table.revisions(), clock.now)
    decided = plan(table, observer, "me", set(), clock.now)
    assert sorted(lease.partition for lease in decided.claim) == [0, 1, 2, 3]
    assert decided.hand_over is None
    assert all(lease.revision == 0 for lease in decided.claim)


def test_a_held_lease_is_taken_only_after_its_holder_was_silent_a_whole_period() -> None:
    clock, observer = Clock(), Observer(LEASE)
    held_by_a = {p: (LeaseRecord("a", 5), 20 + p) for p in range(2)}
    table = _table(2, held_by_a, {"a": 9, "me": 10})
    observer.observe(table.revisions(), clock.now)
    assert plan(table, observer, "me", set(), clock.now).claim == []
    clock.advance(LEASE)
    observer.observe(table.revisions(), clock.now)  # a is silent: nothing moved
    decided = plan(table, observer, "me", set(), clock.now)
    # a is gone (its heartbeat is silent too): the quota is both partitions
    assert sorted(lease.partition for lease in decided.claim) == [0, 1]


def test_released_leases_are_free_at_once_and_surplus_is_handed_over_one_at_a_time() -> None:
    clock, observer = Clock(), Observer(LEASE)
    mine = {p: (LeaseRecord("me", 3), 30 + p) for p in range(4)}
    table = _table(4, mine, {"me": 1, "b": 2})
    observer.observe(table.revisions(), clock.now)
    # Nothing is handed over before the table was watched a whole lease period (b may be a
    # member whose death does not show yet)...
    assert plan(table, observer, "me", {0, 1, 2, 3}, clock.now) == Plan()
    clock.advance(LEASE / 2)
    observer.observe(_table(4, mine, {"me": 4, "b": 3}).revisions(), clock.now)  # both beat
    clock.advance(LEASE / 2)
    table = _table(4, mine, {"me": 4, "b": 3})
    decided = plan(table, observer, "me", {0, 1, 2, 3}, clock.now)
    assert decided.claim == [] and decided.hand_over in {0, 1, 2, 3}
    # Handing one over: the others are held; the one in progress is not handed over twice.
    handing = decided.hand_over
    again = plan(table, observer, "me", {0, 1, 2, 3} - {handing}, clock.now, busy={handing})
    assert again.hand_over not in {None, handing}
    # b's view: the partition handed over is free at once (no lease period to wait).
    released = dict(mine)
    released[handing] = (LeaseRecord(None, 3), 50)
    table = _table(4, released, {"me": 4, "b": 3})
    watched_by_b = Observer(LEASE)
    watched_by_b.observe(table.revisions(), clock.now)
    taken = plan(table, watched_by_b, "b", set(), clock.now).claim
    assert [lease.partition for lease in taken] == [handing]


def test_a_replica_never_claims_past_its_quota_nor_what_it_is_busy_with() -> None:
    clock, observer = Clock(), Observer(LEASE)
    table = _table(6, {}, {"me": 1, "b": 2, "c": 3})
    observer.observe(table.revisions(), clock.now)
    decided = plan(table, observer, "me", {5}, clock.now, busy={5})
    assert len(decided.claim) == 1  # quota 2, one already held
    assert all(lease.partition != 5 for lease in decided.claim)


def test_preference_spreads_partitions_between_replicas() -> None:
    clock, observer = Clock(), Observer(LEASE)
    table = _table(64, {}, {"a": 1, "b": 2})
    observer.observe(table.revisions(), clock.now)
    first_a = {lease.partition for lease in plan(table, observer, "a", set(), clock.now).claim}
    first_b = {lease.partition for lease in plan(table, observer, "b", set(), clock.now).claim}
    assert len(first_a) == len(first_b) == 32
    assert 8 < len(first_a & first_b) < 24  # independent choices, not the same list


def test_a_claim_writes_an_epoch_above_every_earlier_one() -> None:
    lease = Lease(1, LeaseRecord("a", 4), revision=9)
    claimed = lease.claimed_by("b", fence_epoch=0)
    assert claimed == LeaseRecord("b", 10)
    # A bucket emptied and made again: revisions start over, the fence remembers the epoch.
    assert Lease(1, None, 0).claimed_by("b", fence_epoch=57).epoch == 58


def test_lease_records_round_trip_and_junk_is_not_one() -> None:
    record = LeaseRecord("a", 7)
    assert LeaseRecord.decode(record.encode()) == record
    assert LeaseRecord.decode(LeaseRecord(None, 2).encode()) == LeaseRecord(None, 2)
    # A record that still names a snapshot (written before snapshots had a key of their own)
    # is read as the lease it is; where the state is comes from the snapshot's key alone.
    older = b'{"owner":"a","epoch":7,"snapshot":{"name":"p0/e7/s99","seq":99,"size":1}}'
    assert LeaseRecord.decode(older) == record
    for junk in (b"", b"{}", b"[1]", b'{"owner": "a"}', b'{"owner": 1, "epoch": "x"}'):
        with pytest.raises(ValueError, match="not a lease record"):
            LeaseRecord.decode(junk)
    table = Table.parse({"p.0": (b"junk", 4), "p.9": (b"{}", 5), "x": (b"", 1)}, 2)
    assert table.leases[0] == Lease(0, None, 4)  # claimable, against revision 4
    assert set(table.leases) == {0, 1} and table.members == {}


def test_a_snapshot_record_is_replaced_only_by_one_covering_a_later_sequence() -> None:
    newest = SnapshotRef("p0/e5/s120", 120, 10, epoch=5, owner="b", taken_at=1.5)
    assert newest.supersedes(None)
    # An older snapshot never replaces it, whatever its epoch: a deposed owner's, late...
    assert not SnapshotRef("p0/e4/s100", 100, 10, epoch=4).supersedes(newest)
    # ...or a later epoch's that has not caught up yet; nor one covering the same sequence.
    assert not SnapshotRef("p0/e6/s110", 110, 10, epoch=6).supersedes(newest)
    assert not SnapshotRef("p0/e6/s120", 120, 10, epoch=6).supersedes(newest)
    # A later sequence does, even from an earlier epoch: it holds every event up to it.
    assert SnapshotRef("p0/e4/s121", 121, 10, epoch=4).supersedes(newest)
    assert SnapshotRef.decode(newest.encode()) == newest
    assert snapshot_key(3) == "s.3"
    for junk in (b"", b"{}", b'{"name": "x"}', b'{"name": "x", "seq": "y", "size": 1}'):
        with pytest.raises(ValueError, match="not a snapshot record"):
            SnapshotRef.decode(junk)
    # The lease table reads past the snapshot keys beside the leases.
    table = Table.parse({snapshot_key(0): (newest.encode(), 3)}, 1)
    assert table.leases[0] == Lease(0, None, 0) and table.members == {}


def test_fence_helpers() -> None:
    tenure = Tenure(2, 17, "ns.fence.2", 345, {"orchestrator-p2": 100})
    assert tenure.consumer("orchestrator-p2") == "orchestrator-p2-e17"
    assert tenure.fence_headers() == {
        "Nats-Expected-Last-Subject-Sequence": "345",
        "Nats-Expected-Last-Subject-Sequence-Subject": "ns.fence.2",
    }
    assert tenure.with_fence(400).fence_seq == 400 and tenure.fence_seq == 345
    assert epoch_of("orchestrator-p2", "orchestrator-p2") == 0
    assert epoch_of("orchestrator-p2-e17", "orchestrator-p2") == 17
    assert epoch_of("orchestrator-p21-e17", "orchestrator-p2") is None
    assert epoch_of("orchestrator-p2-ex", "orchestrator-p2") is None
    assert marker_epoch(marker("r", 17)) == 17
    assert [marker_epoch(b) for b in (b"", b"x", b"{}", b'{"epoch": true}')] == [0, 0, 0, 0]
