"""One partition a lease-mode replica holds: taken over, served, snapshotted, handed over or lost.

Taking a partition over, once the lease's compare-and-set was won (`runtime.ownership`):

  1. a NATS connection of its own, bound to the partition's `Tenure` (`events.fencing`);
  2. the fence: this epoch's marker on `<ns>.fence.<p>`, put there only while the last marker is
     an earlier epoch's — from now on a predecessor's writes into the event stream are refused;
  3. where each consumer starts: the engine's at the snapshot's sequence + 1, the router's and
     the notifier's where their predecessors' acks ended (the lowest ack floor);
  4. the store: the partition's newest recorded snapshot (`runtime.snapshots`), read once and
     restored under the state directory — the engine's consumer starts right after the
     sequence of that same snapshot, so no event is skipped whoever recorded it;
  5. the partition's components — the same as a static orchestrator's (engine, status API,
     gauges; then, once the engine has applied what the stream held when it started, the router,
     notifier and scheduler, so that no wait it restores is missed) — under an inner supervisor,
     with a snapshot loop beside them;
  6. the predecessors' consumers deleted: a deposed owner can neither fetch nor ack.

It ends in one of three ways. Handed over (a replica joined, or this one stops): the components
drain, a last snapshot is taken and recorded, and the lease is written free, so the receiver
restores it rather than waits (should that lease write fail, the snapshot stays recorded). Lost
(a renewal found someone else's record, or a component's write was refused by the fence): the
components stop, nothing more is written to the lease, the local files go — they are a cache,
the snapshots and the stream are the truth. Failed (a component failed otherwise): the process
ends, as in static mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from events.bus import Bus
from events.errors import BusError, BusUnavailable
from events.fencing import Tenure, epoch_of, marker, marker_epoch
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.leases import LeaseRecord, SnapshotRef, partition_key
from orchestrator.runtime.owned_parts import AfterCatchUp, CatchUp, Fenced, SnapshotLoop
from orchestrator.runtime.snapshots import Snapshots
from orchestrator.runtime.store import Store
from orchestrator.runtime.supervisor import Component, ConnectionWatch, Supervisor

log = structlog.get_logger("conveyor.ownership")
_FENCE_ATTEMPTS = 5


class LeaseLost(Exception):
    """This replica no longer holds a partition's lease (someone else's record or marker)."""


class PartitionFailed(Exception):
    """A partition's component failed (not by losing the lease): the process must end."""


@dataclass(slots=True)
class PartitionParts:
    """A partition's components, as the composition root builds them for both modes."""

    engine: Engine
    serving: list[Component]  # started at once (engine first)
    after_catch_up: list[Component]  # started once the engine replayed the stream's tail


Build = Callable[[Bus, Store, int], PartitionParts]


class Sink(Protocol):
    """Where an owned partition reports what it did (the ownership's metrics)."""

    def snapshot_taken(self, seconds: float, size: int) -> None: ...

    def restored(self, seconds: float, size: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Context:
    """What every owned partition of a replica shares."""

    replica: str
    connect: Callable[[str], Awaitable[Bus]]
    build: Build
    state_dir: Path
    lease_s: float
    snapshot_interval_s: float
    sink: Sink
    stop_timeout_s: float = 30.0


class LeaseHandle:
    """A held lease's key: writes serialised, each a compare-and-set on the revision written
    last. `desired` is what the next write puts (renewals write it again)."""

    def __init__(self, bus: Bus, partition: int, record: LeaseRecord, revision: int) -> None:
        self.bus = bus
        self.partition = partition
        self.desired = record
        self.revision = revision
        self._lock = asyncio.Lock()

    @property
    def epoch(self) -> int:
        return self.desired.epoch

    async def write(self, timeout: float) -> bool:
        """Write `desired`; False when the lease is someone else's now. BusUnavailable when
        JetStream did not answer (the write may or may not have happened: the next one tells)."""
        bucket, key = self.bus.topology.leases_bucket, partition_key(self.partition)
        async with self._lock:
            value = self.desired.encode()
            try:
                revision = await asyncio.wait_for(
                    self.bus.kv_update(bucket, key, value, last=self.revision), timeout
                )
            except TimeoutError as exc:
                raise BusUnavailable(f"renewing {key} took over {timeout:g}s") from exc
            if revision is None:
                return await self._was_ours(bucket, key)
            self.revision = revision
            return True

    async def _was_ours(self, bucket: str, key: str) -> bool:
        """A compare-and-set failed: the key moved on — by a write of ours whose answer was
        lost (adopt its revision), or by someone else's claim."""
        entry = await self.bus.kv_get(bucket, key)
        if entry is None:
            return False
        try:
            record = LeaseRecord.decode(entry.value)
        except ValueError:
            return False
        mine = self.desired
        if record.owner == mine.owner and record.epoch == mine.epoch and mine.owner is not None:
            self.revision = entry.revision
            return True
        return False


class OwnedPartition:
    def __init__(self, handle: LeaseHandle, context: Context) -> None:
        self.handle = handle
        self.partition = handle.partition
        self.epoch = handle.epoch
        self.ctx = context
        self.dir = context.state_dir / f"p{self.partition}-e{self.epoch}"
        self.since = time.monotonic()
        self.handing_over = False
        self.running = False
        self.lost: str | None = None
        self.bus: Bus | None = None
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.snapshots: Snapshots | None = None
        self.supervisor: Supervisor | None = None
        self._served = asyncio.Event()

    def _log(self) -> structlog.stdlib.BoundLogger:
        return log.bind(partition=self.partition, epoch=self.epoch)  # type: ignore[no-any-return]

    # ---- taking over ------------------------------------------------------------------------
    async def take_over(self) -> None:
        steps = _Steps()
        self.bus = bus = await self.ctx.connect(f"orchestrator-p{self.partition}")
        steps.done("connect")
        topo = bus.topology
        consumer = Tenure(self.partition, self.epoch, "", 0).consumer(
            topo.orchestrator_consumer(self.partition)
        )
        self.snapshots = Snapshots(
            bus, self.dir / "store.db", self.partition, self.epoch, consumer, self.ctx.replica
        )
        # Read once: the store restored and where the engine's consumer starts must agree.
        snapshot = await self.snapshots.newest()
        # The download does not wait for the fence and the consumers (it needs neither).
        restoring = asyncio.create_task(self.snapshots.restore(snapshot))
        try:
            head = await bus.last_sequence(topo.events_stream)
            fence_seq = await self._fence(bus)
            steps.done("fence")
            starts, predecessors = await self._consumer_starts(bus, snapshot)
            steps.done("consumers")
            restored = await restoring
            steps.done("restore")
        finally:
            restoring.cancel()
        bus.tenure = Tenure(
            self.partition, self.epoch, topo.fence_subject(self.partition), fence_seq, starts
        )
        self._check()
        self.store = await Store.open(self.dir / "store.db")
        parts = self.ctx.build(bus, self.store, self.partition)
        self.engine = parts.engine
        caught_up = asyncio.Event()
        self.supervisor = Supervisor(
            [
                ConnectionWatch(bus, f"nats:orchestrator-p{self.partition}"),
                *(Fenced(c, self) for c in parts.serving),
                CatchUp(bus, consumer, head, caught_up),
                *(Fenced(AfterCatchUp(c, caught_up), self) for c in parts.after_catch_up),
                SnapshotLoop(self),
            ],
            handle_signals=False,
            stop_timeout_s=self.ctx.stop_timeout_s,
        )
        await self.supervisor.start()
        steps.done("start")
        self.running = True
        if self.lost is not None or self.handing_over:
            self.supervisor.stop()  # what came while it started: it stops as soon as it runs
        if self.lost is None:  # (a takeover that lost its lease meanwhile deletes nothing)
            await asyncio.gather(*(_delete(bus, stream, name) for stream, name in predecessors))
        steps.done("fenced-out")
        if snapshot is not None:
            self.ctx.sink.restored(restored.seconds, restored.size)
        self._log().info(
            "partition taken over",
            snapshot_seq=snapshot.seq if snapshot else None,
            snapshot_epoch=snapshot.epoch if snapshot else None,
            snapshot_bytes=restored.size,
            takeover_s=round(steps.total, 3),
            steps=steps.seconds,
            predecessors=[name for _, name in predecessors],
        )

    async def _fence(self, bus: Bus) -> int:
        """Put this epoch's marker on the fence subject, unless a later epoch's is there."""
        for _ in range(_FENCE_ATTEMPTS):
            self._check()
            last_seq, body = await bus.last_fence(self.partition)
            if marker_epoch(body) >= self.epoch:
                raise LeaseLost(f"a later epoch ({marker_epoch(body)}) holds the fence")
            seq = await bus.publish_fence(
                self.partition, last_seq, marker(self.ctx.replica, self.epoch)
            )
            if seq is not None:
                return seq
            await asyncio.sleep(0.05)
        raise BusUnavailable(f"the fence of partition {self.partition} kept moving")

    async def _consumer_starts(
        self, bus: Bus, snapshot: SnapshotRef | None
    ) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """Where each of this epoch's consumers starts (the engine's right after `snapshot`,
        the one restored), and the predecessors' to delete."""
        topo = bus.topology
        p = self.partition
        families = {
            topo.events_stream: [
                topo.orchestrator_consumer(p),
                topo.router_consumer(p, "outcomes"),
                topo.notifier_consumer(p),
            ],
            topo.ingest_stream: [topo.router_consumer(p, "ingest")],
        }
        starts: dict[str, int] = {}
        predecessors: list[tuple[str, str]] = []
        for stream, bases in families.items():
            every = await bus.consumer_floors(stream, "")  # one listing per stream
            for base in bases:
                mine = f"{base}-e{self.epoch}"
                if mine in every:  # left by an earlier life of the bucket: not ours to resume
                    await bus.delete_consumer(stream, mine)
                # Only earlier epochs are predecessors. A later epoch's consumer means this
                # takeover is already stale (another replica claimed the partition while it
                # ran, e.g. starved for seconds): deleting it would leave the rightful owner
                # with no consumer to fetch from, and the partition stuck.
                floors = {n: f for n, f in every.items() if _earlier(n, base, self.epoch)}
                predecessors += [(stream, name) for name in floors]
                if base == topo.orchestrator_consumer(p):
                    if snapshot is not None:  # else: no state yet, replay from the start
                        starts[base] = snapshot.seq + 1
                elif floors:
                    starts[base] = min(floors.values()) + 1
        return starts, predecessors

    def _check(self) -> None:
        if self.lost is not None:
            raise LeaseLost(self.lost)

    # ---- serving ------------------------------------------------------------------------------
    async def serve(self) -> None:
        """Run the partition's components until they stop; PartitionFailed when one of them
        failed (other than by losing the partition)."""
        assert self.supervisor is not None
        try:
            await self.supervisor.serve()
        finally:
            self.running = False
            self._served.set()
        if self.supervisor.failures and self.lost is None:
            raise PartitionFailed(
                f"partition {self.partition}: " + "; ".join(self.supervisor.failures)
            )

    def lose(self, why: str) -> None:
        """Stop owning the partition at once: nothing is written, nothing is handed over."""
        if self.lost is not None:
            return
        self.lost = why
        self._log().warning("stopped owning the partition", reason=why)
        if self.running and self.supervisor is not None:
            self.supervisor.stop()  # (while it starts, the takeover stops it once started)

    def request_hand_over(self) -> None:
        """Begin handing the partition over: its components stop (and drain); the owner's task
        then calls `complete_hand_over`."""
        self.handing_over = True
        if self.running and self.supervisor is not None:
            self.supervisor.stop()

    async def complete_hand_over(self, timeout: float) -> bool:
        """Once drained: a last snapshot, recorded, then the lease written free. Whether it was
        handed over (False: the lease was lost meanwhile — the snapshot stays recorded all the
        same, and whoever takes the partition restores it)."""
        assert self.snapshots is not None
        if self.lost is not None:
            return False
        ref, recorded, timing = await self.snapshots.take()
        self.ctx.sink.snapshot_taken(timing.seconds, timing.size)
        self.handle.desired = LeaseRecord(None, self.epoch)
        if not await self.handle.write(timeout):
            # Claimed meanwhile: by another replica, or by this one as a later epoch.
            self.lose("its lease was claimed again while it was handed over")
            return False
        self._log().info(
            "partition handed over",
            snapshot_seq=ref.seq,
            snapshot_bytes=ref.size,
            snapshot_recorded=recorded,
        )
        return True

    async def snapshot(self) -> None:
        """Take a snapshot and record it (the snapshot loop's step; no lease write)."""
        assert self.snapshots is not None
        _, _, timing = await self.snapshots.take()
        self.ctx.sink.snapshot_taken(timing.seconds, timing.size)

    async def close(self) -> None:
        """Release what the partition held here; its local files are a cache and go."""
        if self.supervisor is not None and not self._served.is_set():
            self.supervisor.stop()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
        if self.bus is not None:
            await self.bus.close()
        await asyncio.to_thread(shutil.rmtree, self.dir, True)


class _Steps:
    """How long each step of a takeover took (for its log line)."""

    def __init__(self) -> None:
        self._last = self._first = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 3)
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self._first


def _earlier(consumer: str, base: str, epoch: int) -> bool:
    """Whether `consumer` is of the family `base` and made under an epoch before `epoch`."""
    made_under = epoch_of(consumer, base)
    return made_under is not None and made_under < epoch


async def _delete(bus: Bus, stream: str, name: str) -> None:
    with contextlib.suppress(BusError):  # gone already, or the next takeover deletes it
        await bus.delete_consumer(stream, name)
