"""Lease-mode orchestrator replicas on the test cluster, and ways to catch one at a given moment.

`stop_when` freezes a process (SIGSTOP) again and again at random moments until a probe says it
is in the middle of what a test wants to interrupt — an outbox not yet flushed in its store, a
snapshot's chunks uploaded but not yet its meta — and leaves it frozen there for the kill.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats.errors
import nats.js.errors

from events.bus import Bus
from events.errors import BusError
from orchestrator.runtime.leases import (
    LeaseRecord,
    SnapshotRef,
    Table,
    partition_key,
    snapshot_key,
)
from orchestrator.runtime.snapshots import dump
from tests.cluster.conftest import Deployment

LEASE_S = 2.0
SNAPSHOT_S = 1.0


class Replicas:
    """`conveyor orchestrator --lease` processes, each named and with its own state dir."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def state_dir(self, name: str) -> Path:
        return self.deployment.workdir / f"state-{name}"

    def start(self, name: str) -> subprocess.Popen[bytes]:
        proc = self.deployment.spawn(
            "orchestrator",
            "--lease",
            "--replica-id",
            name,
            "--state-dir",
            str(self.state_dir(name)),
            "--lease-seconds",
            str(LEASE_S),
            "--snapshot-interval",
            str(SNAPSHOT_S),
            "--log-level",
            "info",
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        """The replica's output (what `Deployment.spawn` wrote it to)."""
        index = self.deployment.processes.index(self.procs[name])
        return self.deployment.workdir / f"proc-{index}.log"

    def kill(self, name: str) -> float:
        """kill -9, and its disk is gone too; the time of the kill."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        killed = time.time()
        proc.wait(10)
        shutil.rmtree(self.state_dir(name), ignore_errors=True)
        return killed


async def owners(bus: Bus) -> dict[int, str | None]:
    """Partition -> the replica its lease names (None: free, or handed over)."""
    entries = await bus.kv_entries(bus.topology.leases_bucket)
    table = {key: (entry.value, entry.revision) for key, entry in entries.items()}
    return Table.parse(table, bus.topology.partitions).owners()


async def serving(bus: Bus, expected: dict[str, int]) -> dict[int, str | None] | None:
    """The lease table once every replica named holds its count of partitions (else None)."""
    try:
        table = await owners(bus)
    except BusError:
        return None
    counts = Counter(owner for owner in table.values() if owner is not None)
    return table if dict(counts) == expected else None


async def stop_when(
    proc: subprocess.Popen[bytes], probe: Callable[[], Awaitable[bool]], timeout_s: float = 60
) -> bool:
    """Freeze `proc` at random moments until `probe` is true while it is frozen — it is then
    left frozen, for the kill; False when that never happened within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            caught = await probe()
        except BaseException:
            os.kill(proc.pid, signal.SIGCONT)
            raise
        if caught:
            return True
        os.kill(proc.pid, signal.SIGCONT)
        await asyncio.sleep(random.uniform(0.005, 0.05))
    return False


def outbox_rows(state_dir: Path) -> int:
    """Committed outbox rows due now in a replica's stores: published, or being published,
    but not yet known to be (what a kill -9 "during an outbox flush" leaves behind)."""
    rows = 0
    for db in state_dir.glob("*/store.db"):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as connection:
                rows += connection.execute(
                    "SELECT COUNT(*) FROM outbox WHERE due_at <= ?", (time.time(),)
                ).fetchone()[0]
        except sqlite3.Error:
            continue
    return rows


async def uploads_in_progress(bus: Bus) -> set[str] | None:
    """Chunk subjects of the snapshots object store that no object's meta names yet: uploads
    under way (their meta is written last). None when JetStream could not say."""
    bucket = bus.topology.snapshots_bucket
    try:
        info = await bus.js.stream_info(f"OBJ_{bucket}", subjects_filter=f"$O.{bucket}.C.>")
        store = await bus.js.object_store(bucket)
        try:
            metas = await store.list(ignore_deletes=True)
        except nats.js.errors.NotFoundError:
            metas = []
    except nats.errors.Error:
        return None
    named = {f"$O.{bucket}.C.{m.nuid}" for m in metas}
    return set(info.state.subjects or {}) - named


async def seed_partition(bus: Bus, workdir: Path, partition: int, runs: int) -> SnapshotRef:
    """A big store for `partition` (finished runs, as `bench.seed` writes them), uploaded and
    recorded as its snapshot, its lease free, before any replica starts: every snapshot of that
    partition is then big enough to catch one mid-upload."""
    from bench.seed import seed

    db = workdir / f"seed-p{partition}.db"
    await asyncio.to_thread(seed, db, runs)
    data = await asyncio.to_thread(dump, db)
    ref = SnapshotRef(f"p{partition}/e0/s0", 0, len(data))
    await bus.put_snapshot(ref.name, data)
    leases = bus.topology.leases_bucket
    await bus.kv_create(leases, snapshot_key(partition), ref.encode())
    await bus.kv_create(leases, partition_key(partition), LeaseRecord(None, 0).encode())
    return ref


def fence_of(headers: dict[str, str]) -> tuple[str, int] | None:
    """The fence a stored event was published under (subject, marker sequence), if any."""
    subject = headers.get("Nats-Expected-Last-Subject-Sequence-Subject")
    sequence = headers.get("Nats-Expected-Last-Subject-Sequence")
    return (subject, int(sequence)) if subject and sequence else None
