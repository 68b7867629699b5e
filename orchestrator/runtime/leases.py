"""Partition leases without synchronised clocks: the records, what a replica has watched, and
the plan of which partitions to claim or hand over (lease mode; pure, driven by a clock that is
a parameter).

The leases bucket holds three kinds of keys:

    p.<partition>   a `LeaseRecord`: the owner (a replica id, or none once handed over) and the
                    epoch it took the partition under
    m.<replica>     a replica's heartbeat (its value is only for people)
    s.<partition>   a `SnapshotRef`: the partition's newest snapshot, written as soon as it is
                    uploaded, whatever becomes of the lease (`runtime.snapshots`), and only
                    ever replaced by one covering a later event-stream sequence (`supersedes`)

An owner rewrites each of its partitions' records every lease/3 — a compare-and-set on the
revision it wrote last — and its member key likewise: a live holder keeps changing the key's
revision. Nobody compares timestamps written by someone else. A contender declares a lease
expired once it has watched the record keep one revision for a whole lease period by its own
monotonic clock, counting only time during which its own reads and writes succeeded: while
JetStream elects a leader for the bucket nobody can renew, so nothing watched before a failure
counts afterwards (`Observer.blind`). Taking an expired or handed-over lease is a
compare-and-set on the revision watched: of two contenders one wins, and a holder that renewed
meanwhile makes both fail.

The epoch of a claim is above every earlier one (`Lease.claimed_by`): it names the owner's
consumers and fence marker (`events.fencing`), and a claimant never fences over a later epoch.

Each replica holds at most ceil(P / live replicas) partitions; one that holds more (a replica
joined) hands the surplus over, one per round, after a snapshot, so the receiver restores
rather than waits. Which partitions a replica prefers is a rendezvous hash of (replica,
partition): stable, and spread evenly without coordination.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

PARTITION_PREFIX = "p."
MEMBER_PREFIX = "m."
SNAPSHOT_PREFIX = "s."
MIN_LEASE_S = 1.0
# A member silent this many lease periods is deleted from the table (it is long gone).
FORGET_AFTER_LEASES = 10


def partition_key(partition: int) -> str:
    return f"{PARTITION_PREFIX}{partition}"


def member_key(replica: str) -> str:
    return f"{MEMBER_PREFIX}{replica}"


def snapshot_key(partition: int) -> str:
    return f"{SNAPSHOT_PREFIX}{partition}"


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """A partition's store as uploaded to the snapshots object store: it holds every event of
    the partition up to stream sequence `seq` (replay starts after it). `epoch`, `owner` and
    `taken_at` (Unix seconds, the taker's clock) say who took it and when: for people, and for
    pruning (never a later epoch's); the order between snapshots is `seq` alone."""

    name: str
    seq: int
    size: int  # bytes as stored (compressed)
    epoch: int = 0
    owner: str = ""
    taken_at: float = 0.0

    def supersedes(self, current: SnapshotRef | None) -> bool:
        """Whether this snapshot may replace `current` as the partition's newest: only when it
        covers a later sequence. Any owner's snapshot holds every event up to its own `seq` (its
        consumer's ack floor), a deposed owner's too, so a later sequence is a shorter replay;
        an earlier or equal one never replaces what is recorded."""
        return current is None or self.seq > current.seq

    def encode(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "seq": self.seq,
                "size": self.size,
                "epoch": self.epoch,
                "owner": self.owner,
                "taken_at": self.taken_at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SnapshotRef:
        """The record in `raw`; ValueError when it is not one."""
        try:
            data = json.loads(raw)
            return cls(
                name=str(data["name"]),
                seq=int(data["seq"]),
                size=int(data["size"]),
                epoch=int(data.get("epoch", 0)),
                owner=str(data.get("owner", "")),
                taken_at=float(data.get("taken_at", 0.0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a snapshot record: {raw[:80]!r}") from exc


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """Who owns a partition, under which epoch. Where its state is lives on a key of its own
    (`snapshot_key`): a lease write that fails must not lose a snapshot already uploaded."""

    owner: str | None  # None: handed over (free to take at once)
    epoch: int

    def encode(self) -> bytes:
        return json.dumps(
            {"owner": self.owner, "epoch": self.epoch}, separators=(",", ":")
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> LeaseRecord:
        """The record in `raw`; ValueError when it is not one (written by something else)."""
        try:
            data = json.loads(raw)
            owner = data["owner"]
            record = cls(owner=None if owner is None else str(owner), epoch=int(data["epoch"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a lease record: {raw[:80]!r}") from exc
        return record


@dataclass(frozen=True, slots=True)
class Lease:
    """A partition's key as read: its record (None: no key, or not a record) and revision."""

    partition: int
    record: LeaseRecord | None
    revision: int  # 0: the key does not exist

    @property
    def key(self) -> str:
        return partition_key(self.partition)

    def claimed_by(self, replica: str, fence_epoch: int) -> LeaseRecord:
        """The record a claim of this lease writes: an epoch above every one before it — the
        record's, the revision claimed against (every earlier claim wrote below it), and the
        epoch of the last fence marker (`fence_epoch`: so epochs keep growing even if the
        bucket was emptied)."""
        previous = self.record.epoch if self.record is not None else 0
        epoch = max(previous, self.revision, fence_epoch) + 1
        return LeaseRecord(owner=replica, epoch=epoch)


class Observer:
    """Which keys kept one revision for a whole lease period, as watched from this replica."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._since: dict[str, tuple[int, float]] = {}  # key -> (revision, unchanged since)
        self._watching: float | None = None  # since when reads succeeded without a failure

    def observe(self, revisions: Mapping[str, int], now: float) -> None:
        """A successful read of the whole table at `now` (monotonic seconds)."""
        if self._watching is None:
            self._watching = now
        for key, revision in revisions.items():
            seen = self._since.get(key)
            if seen is None or seen[0] != revision:
                self._since[key] = (revision, now)
        for gone in set(self._since) - set(revisions):
            del self._since[gone]

    def blind(self) -> None:
        """A read or a write failed: JetStream may be electing a leader, during which nobody can
        renew, so no silence watched so far may count."""
        self._since.clear()
        self._watching = None

    def watched_for(self, now: float) -> float:
        """How long the table has been watched without a failure (0: not since the last)."""
        return 0.0 if self._watching is None else max(0.0, now - self._watching)

    def silent_for(self, key: str, now: float) -> float:
        """How long `key` has been watched keeping the same revision (0: not watched)."""
        seen = self._since.get(key)
        return 0.0 if seen is None else max(0.0, now - seen[1])

    def expired(self, key: str, now: float) -> bool:
        return self.silent_for(key, now) >= self.lease_s


@dataclass(frozen=True, slots=True)
class Table:
    """The leases bucket as read once: every partition's lease and every member key."""

    leases: dict[int, Lease]
    members: dict[str, int]  # replica id -> revision of its member key

    @classmethod
    def parse(cls, entries: Mapping[str, tuple[bytes, int]], partitions: int) -> Table:
        leases = {p: Lease(p, None, 0) for p in range(partitions)}
        members: dict[str, int] = {}
        for key, (value, revision) in entries.items():
            if key.startswith(MEMBER_PREFIX):
                members[key[len(MEMBER_PREFIX) :]] = revision
                continue
            partition = _partition_of(key, partitions)
            if partition is None:
                continue
            try:
                record: LeaseRecord | None = LeaseRecord.decode(value)
            except ValueError:
                record = None  # overwritten by the next claim
            leases[partition] = Lease(partition, record, revision)
        return cls(leases, members)

    def owners(self) -> dict[int, str | None]:
        """Partition -> the replica its lease names (None: free, handed over, or unreadable)."""
        return {p: lease.record.owner if lease.record else None for p, lease in self.leases.items()}

    def revisions(self) -> dict[str, int]:
        out = {lease.key: lease.revision for lease in self.leases.values() if lease.revision}
        out.update({member_key(m): r for m, r in self.members.items()})
        return out


def _partition_of(key: str, partitions: int) -> int | None:
    digits = key[len(PARTITION_PREFIX) :]
    if not key.startswith(PARTITION_PREFIX) or not digits.isdigit():
        return None
    partition = int(digits)
    return partition if partition < partitions else None


def live_members(table: Table, observer: Observer, me: str, now: float) -> set[str]:
    """This replica and every member whose key changed within a lease period."""
    return {me} | {m for m in table.members if not observer.expired(member_key(m), now)}


def forgotten_members(table: Table, observer: Observer, now: float) -> list[str]:
    """Members silent for so long that their keys can go."""
    limit = observer.lease_s * FORGET_AFTER_LEASES
    return [m for m in table.members if observer.silent_for(member_key(m), now) >= limit]


def quota(partitions: int, live: int) -> int:
    return math.ceil(partitions / max(1, live))


def preference(replica: str, partition: int) -> int:
    """Rendezvous hash: how much `replica` wants `partition` (higher first)."""
    digest = hashlib.blake2b(f"{replica}/{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def claimable(lease: Lease, observer: Observer, me: str, now: float) -> bool:
    """Free to take now: never held, handed over, unreadable, or expired (its holder silent
    for a whole lease period)."""
    record = lease.record
    if record is None or record.owner is None or record.owner == me:
        return True  # (a record of this replica's that it no longer serves: take it back)
    return observer.expired(lease.key, now)


@dataclass(frozen=True, slots=True)
class Plan:
    claim: list[Lease] = field(default_factory=list)
    hand_over: int | None = None  # at most one per round, so a newcomer is not flooded


def plan(
    table: Table,
    observer: Observer,
    me: str,
    held: Collection[int],
    now: float,
    *,
    busy: Collection[int] = (),
) -> Plan:
    """Which leases to claim (in order of preference) and which held partition to hand over.
    `held`: the partitions this replica owns or is taking over (not those it is handing over);
    `busy`: those it is taking over or handing over — never handed over, nor claimed."""
    live = live_members(table, observer, me, now)
    limit = quota(len(table.leases), len(live))
    if len(held) > limit:
        if observer.watched_for(now) < observer.lease_s:
            # Right after a failure every member looks alive for a while (their silence is
            # forgotten): wait until the dead ones show, rather than hand over to them.
            return Plan()
        candidates = sorted(set(held) - set(busy), key=lambda p: preference(me, p))
        return Plan(hand_over=candidates[0] if candidates else None)
    free = [
        lease
        for p, lease in table.leases.items()
        if p not in held and p not in busy and claimable(lease, observer, me, now)
    ]
    free.sort(key=lambda lease: preference(me, lease.partition), reverse=True)
    return Plan(claim=free[: limit - len(held)])
