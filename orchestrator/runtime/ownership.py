"""Lease mode: any number of identical orchestrator replicas share the partitions through leases
in a replicated KV bucket, fail over in seconds and rebalance when one joins or leaves.

Every lease/3 each replica plays a round:

  1. it rewrites its member key (its heartbeat) and every lease it holds, each a
     compare-and-set on the revision it wrote last (`owned.LeaseHandle`); a lease found to be
     someone else's is lost at once — its components stop, nothing more is written;
  2. it reads the whole bucket and notes which keys changed (`leases.Observer`: silence is
     measured on this replica's monotonic clock, and any failed read or write forgets it);
  3. it claims what `leases.plan` says — partitions never held, handed over, or whose holder
     was silent for a whole lease period, up to ceil(P / live replicas), in its order of
     preference — and hands at most one surplus partition over (a replica joined).

Claiming is a compare-and-set too; the winner takes the partition over in a task of its own
(`owned.OwnedPartition`: fence, consumers, snapshot restore, components) while the rounds go
on renewing its lease. A partition held for half the event stream's retention is handed over
(possibly to this same replica), so that its fence marker never ages out of the stream.

On SIGTERM every partition is handed over (a last snapshot each, the leases written free) and
the member key deleted, so the others take over at once instead of after a lease period. A
replica that cannot write its heartbeat for `rejoin_timeout_s` exits non-zero: its supervisor
starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from events.bus import Bus
from events.errors import BusError, Deposed
from events.fencing import marker_epoch
from events.ids import is_token
from orchestrator.errors import StoreError
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.leases import (
    MIN_LEASE_S,
    Lease,
    Observer,
    Table,
    forgotten_members,
    member_key,
    partition_key,
    plan,
)
from orchestrator.runtime.metrics import OwnershipMetrics
from orchestrator.runtime.owned import (
    Build,
    Context,
    LeaseHandle,
    LeaseLost,
    OwnedPartition,
    PartitionFailed,
)
from orchestrator.runtime.supervisor import StartupFailed

log = structlog.get_logger("conveyor.ownership")


class RejoinFailed(Exception):
    """This replica could not write its heartbeat for too long: it leaves (exit non-zero)."""


def _new_replica_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """A lease-mode replica's settings (documented in docs/failover.md)."""

    state_dir: Path
    lease_s: float = 5.0
    snapshot_interval_s: float = 30.0
    rejoin_timeout_s: float = 30.0
    replica: str = field(default_factory=_new_replica_id)

    def __post_init__(self) -> None:
        if not self.lease_s >= MIN_LEASE_S:
            raise ValueError(f"the lease must be at least {MIN_LEASE_S:g}s, got {self.lease_s}")
        if not self.snapshot_interval_s > 0:
            raise ValueError(f"the snapshot interval must be > 0, got {self.snapshot_interval_s}")
        if not self.rejoin_timeout_s >= self.lease_s:
            raise ValueError("the rejoin timeout must be at least one lease period")
        if not is_token(self.replica) or len(self.replica) > 64:
            raise ValueError(f"replica id {self.replica!r} must be 1-64 of [A-Za-z0-9_-]")

    @property
    def round_s(self) -> float:
        return self.lease_s / 3

    @property
    def op_timeout_s(self) -> float:
        """How long one read or write of the bucket may take before it counts as failed."""
        return max(0.5, self.lease_s / 3)


class Ownership:
    """The lease-mode replica's one component: rounds, and the partitions it holds."""

    def __init__(
        self,
        bus: Bus,
        settings: LeaseSettings,
        connect: Callable[[str], Awaitable[Bus]],
        build: Build,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.replica = settings.replica
        self.partitions = bus.topology.partitions
        self.bucket = bus.topology.leases_bucket
        self.metrics = OwnershipMetrics()
        self.observer = Observer(settings.lease_s)
        self.held: dict[int, OwnedPartition] = {}
        self.context = Context(
            replica=self.replica,
            connect=connect,
            build=build,
            state_dir=settings.state_dir,
            lease_s=settings.lease_s,
            snapshot_interval_s=settings.snapshot_interval_s,
            sink=self.metrics,
        )
        self.name = "ownership"
        self._stopping = asyncio.Event()
        self._beat_ok = time.monotonic()
        self._group: asyncio.TaskGroup | None = None
        # The retention after which a partition is handed over to renew its fence marker.
        self._max_tenure_s = bus.topology.event_max_age_s / 2

    def engines(self) -> list[Engine]:
        """The engines of the partitions this replica serves now (for the metrics)."""
        return [o.engine for o in self.held.values() if o.running and o.engine is not None]

    def owned(self) -> list[int]:
        """The partitions this replica serves now."""
        return sorted(p for p, o in self.held.items() if o.running)

    # ---- lifecycle (runtime.supervisor.Component) -----------------------------------------
    async def start(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        await self._beat()  # the bucket must be writable before anything else happens
        # As configured on the server (what ages the fence markers out), not as assumed here.
        retention = await self.bus.max_age(self.bus.topology.events_stream)
        self._max_tenure_s = retention / 2 if retention > 0 else float("inf")
        log.info("replica joined", replica=self.replica, lease_s=self.settings.lease_s)

    async def run(self) -> None:
        """Rounds until stopped, then every partition handed over. A partition's failure, or a
        heartbeat impossible for too long, ends it (and the process)."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                while not self._stopping.is_set():
                    started = time.monotonic()
                    await self._round(started)
                    took = time.monotonic() - started
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.settings.round_s)
                    late = time.monotonic() - started - took - self.settings.round_s
                    self._warn_if_slow(took, late)
                for owned in list(self.held.values()):
                    owned.request_hand_over()
                group.create_task(self._renew_while_handing_over())
        except* (PartitionFailed, RejoinFailed) as failed:
            raise failed.exceptions[0] from None

    def stop(self) -> None:
        self._stopping.set()

    async def drain(self) -> None:
        for owned in list(self.held.values()):  # only left when run() was cut short
            await owned.close()
        self.held.clear()
        with contextlib.suppress(BusError, TimeoutError):
            entry = await self.bus.kv_get(self.bucket, member_key(self.replica))
            if entry is not None:
                await self.bus.kv_delete(self.bucket, member_key(self.replica), entry.revision)

    # ---- a round ------------------------------------------------------------------------------
    async def _round(self, now: float) -> None:
        try:
            await self._beat()
        except BusError as exc:
            self.observer.blind()
            if now - self._beat_ok > self.settings.rejoin_timeout_s:
                raise RejoinFailed(
                    f"replica {self.replica} could not write its heartbeat to {self.bucket} "
                    f"for {now - self._beat_ok:.0f}s: {exc}"
                ) from exc
            log.warning("heartbeat failed; will try again", error=str(exc))
        await asyncio.gather(*(self._renew(o) for o in list(self.held.values())))
        try:
            entries = await self.bus.kv_entries(self.bucket, self.settings.op_timeout_s)
        except BusError as exc:
            self.observer.blind()
            log.warning("cannot read the leases; will try again", error=str(exc))
            return
        table = Table.parse({k: (e.value, e.revision) for k, e in entries.items()}, self.partitions)
        now = time.monotonic()
        self.observer.observe(table.revisions(), now)
        await self._act(table, now)

    def _warn_if_slow(self, took: float, late: float) -> None:
        """A round that took long, or a wake-up that came late (the event loop was blocked, or
        the process starved of CPU), eats into the lease: say so — it is why a healthy replica
        may lose its partitions."""
        budget = self.settings.lease_s / 2
        if took > budget or late > budget:
            log.warning(
                "a lease round was slow; the lease may be lost",
                round_s=round(took, 3),
                woke_late_s=round(max(0.0, late), 3),
                lease_s=self.settings.lease_s,
            )

    async def _beat(self) -> None:
        value = f'{{"host":"{socket.gethostname()}","pid":{os.getpid()}}}'.encode()
        try:
            await asyncio.wait_for(
                self.bus.kv_put(self.bucket, member_key(self.replica), value),
                self.settings.op_timeout_s,
            )
        except TimeoutError as exc:
            raise BusError(f"the heartbeat took over {self.settings.op_timeout_s:g}s") from exc
        self._beat_ok = time.monotonic()

    async def _renew(self, owned: OwnedPartition) -> None:
        if owned.handle.desired.owner is None or owned.lost is not None:
            return  # handed over already, or stopping
        try:
            mine = await owned.handle.write(self.settings.op_timeout_s)
        except BusError as exc:
            self.observer.blind()  # nobody else could write either: no silence counts
            log.warning(
                "lease renewal failed; will try again", partition=owned.partition, error=str(exc)
            )
            return
        if not mine:
            owned.lose("its lease was taken by another replica")

    async def _act(self, table: Table, now: float) -> None:
        # What is being handed over counts as gone already, but is not claimed again until the
        # hand-over is done (its last snapshot recorded, its lease written free): a claim of
        # our own would fence out the epoch still draining. What is being taken over counts as
        # held, but is not handed over again before it runs.
        held = {p for p, o in self.held.items() if not o.handing_over}
        busy = {p for p, o in self.held.items() if not o.running or o.handing_over}
        decided = plan(table, self.observer, self.replica, held, now, busy=busy)
        for lease in decided.claim:
            await self._claim(lease)
        if decided.hand_over is not None:
            self.held[decided.hand_over].request_hand_over()
        for owned in self.held.values():
            if owned.running and not owned.handing_over and now - owned.since > self._max_tenure_s:
                owned.request_hand_over()  # a fresh epoch, a fresh fence marker
        for member in forgotten_members(table, self.observer, now):
            with contextlib.suppress(BusError):
                await self.bus.kv_delete(self.bucket, member_key(member), table.members[member])

    async def _claim(self, lease: Lease) -> None:
        try:
            _, body = await self.bus.last_fence(lease.partition)
            record = lease.claimed_by(self.replica, marker_epoch(body))
            key, value = partition_key(lease.partition), record.encode()
            if lease.revision == 0:
                revision = await self.bus.kv_create(self.bucket, key, value)
            else:
                revision = await self.bus.kv_update(self.bucket, key, value, last=lease.revision)
        except BusError as exc:
            self.observer.blind()
            log.warning("claim failed", partition=lease.partition, error=str(exc))
            return
        if revision is None:
            return  # another replica won, or the holder renewed meanwhile
        how = (
            "handed over"
            if lease.record is not None and lease.record.owner is None
            else ("expired" if lease.record is not None else "free")
        )
        log.info(
            "partition claimed",
            partition=lease.partition,
            epoch=record.epoch,
            previous=lease.record.owner if lease.record else None,
            lease_was=how,
        )
        owned = OwnedPartition(
            LeaseHandle(self.bus, lease.partition, record, revision), self.context
        )
        self.held[lease.partition] = owned
        assert self._group is not None
        self._group.create_task(self._hold(owned), name=f"partition-{lease.partition}")

    # ---- holding one partition ------------------------------------------------------------------
    async def _hold(self, owned: OwnedPartition) -> None:
        """Take the partition over, serve it until it is lost or handed over; a component's
        failure ends the process (PartitionFailed propagates)."""
        try:
            if await self._take_over(owned):
                self.metrics.events["taken_over"] += 1
                await owned.serve()
                if owned.handing_over and await self._complete_hand_over(owned):
                    self.metrics.events["handed_over"] += 1
            if owned.lost is not None:
                self.metrics.events["lost"] += 1
        finally:
            await owned.close()
            if self.held.get(owned.partition) is owned:
                del self.held[owned.partition]

    async def _take_over(self, owned: OwnedPartition) -> bool:
        try:
            await owned.take_over()
            return True
        except (LeaseLost, Deposed) as exc:
            owned.lose(str(exc))
        except StartupFailed as exc:
            if isinstance(exc.cause, Deposed):
                owned.lose(str(exc.cause))
            else:
                await self._give_back(owned, exc)
        except (BusError, StoreError, OSError, ValueError) as exc:
            await self._give_back(owned, exc)
        return False

    async def _give_back(self, owned: OwnedPartition, exc: BaseException) -> None:
        """A takeover that failed (NATS away, a damaged snapshot): the lease is written free
        again, as it was, so that any replica may try — this one too, next round. When the
        write finds someone else's record, the lease was lost meanwhile (this replica was
        stopped or starved while it took over, its lease expired): the partition is lost, and
        said so, not given back."""
        error = f"{type(exc).__name__}: {exc}"
        current = owned.handle.desired
        owned.handle.desired = type(current)(None, current.epoch)
        try:
            given_back = await owned.handle.write(self.settings.op_timeout_s)
        except BusError:
            given_back = True  # unknown: the lease stays this epoch's until it expires
        if not given_back:
            owned.lose(f"its lease was taken by another replica while it took over ({error})")
            return
        log.warning(
            "could not take the partition over; giving it back",
            partition=owned.partition,
            error=error,
        )
        owned.lost = owned.lost or "the takeover failed"

    async def _complete_hand_over(self, owned: OwnedPartition) -> bool:
        try:
            return await owned.complete_hand_over(self.settings.op_timeout_s)
        except (BusError, StoreError, OSError) as exc:
            # Not handed over: the lease stays ours until it expires, then anyone takes it
            # from the last snapshot installed and the stream.
            log.warning("hand-over failed", partition=owned.partition, error=str(exc))
            return False

    async def _renew_while_handing_over(self) -> None:
        """While stopping: keep the leases being handed over alive until every one is done."""
        while self.held:
            await asyncio.gather(*(self._renew(o) for o in list(self.held.values())))
            await asyncio.sleep(self.settings.round_s)
