"""Lease mode, measured (issue 11): takeover after kill -9, snapshot restore, scaling by replica.

    .venv/bin/python -m bench.failover [--quick] [--kills 5] [--restore-runs 100000]
                                       [--only takeover,restore,throughput]
                                       [--out bench/results/failover.json]

Everything runs on a real 3-node JetStream cluster on loopback (`events.cluster`, every stream
and bucket R3), with `conveyor orchestrator --lease` and `conveyor worker bench/flows.py` as OS
processes, as users deploy them:

takeover   two replicas share P = 2 partitions under a steady load (`bench_one` runs at a fixed
           rate); the owner of partition 0 is killed with -9 and its state directory deleted;
           measured: from the kill to the first dispatch of a run of that partition that no one
           published before (the successor's first transition of its own), seen by a core-NATS
           tap on the task subjects. Then the victim starts again, empty, and the two
           rebalance. Once with the defaults (lease 5 s, snapshot every 30 s) and once with the
           lease at its minimum (1 s) and a snapshot a second.
restore    a store of N finished runs (`bench.seed`) snapshotted (VACUUM INTO + zlib), put into
           the snapshots object store, read back with our reader and restored to a file — and,
           for comparison, read with nats-py's own `ObjectStore.get`.
throughput P = 4, two workers, 1 then 2 replicas, then static mode's 4 orchestrators (for
           the cost of the fence): `bench_one` runs triggered as fast as the client
           publishes; no-op tasks finished per second, from the first trigger until the event
           stream holds every run's outcome (polled every 50 ms).

The 2-core machine this runs on also runs the three nats-servers, the workers and the driver:
each figure is printed with the load average, and none is a claim about a bigger machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors

from events.bus import Bus
from events.cluster import LocalCluster
from events.topology import Topology
from orchestrator.client import Client
from orchestrator.runtime.leases import Table
from orchestrator.runtime.snapshots import dump, load

ROOT = Path(__file__).resolve().parents[1]
FLOWS = "bench/flows.py"
NAMESPACE = "failover"


def _load() -> float:
    return round(os.getloadavg()[0], 1)


@dataclass
class Setup:
    """The cluster, the topology, and the processes started on it."""

    cluster: LocalCluster
    workdir: Path
    topology: Topology
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        return {
            **inherited,
            "CONVEYOR_NATS_URL": self.cluster.url,
            "CONVEYOR_NAMESPACE": self.topology.namespace,
            "CONVEYOR_PARTITIONS": str(self.topology.partitions),
            "CONVEYOR_REPLICAS": "3",
        }

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", *args],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def replica(self, name: str, lease_s: float, snapshot_s: float) -> None:
        self.spawn(
            name,
            "orchestrator",
            "--lease",
            "--replica-id",
            name,
            "--state-dir",
            str(self.workdir / f"state-{name}"),
            "--lease-seconds",
            str(lease_s),
            "--snapshot-interval",
            str(snapshot_s),
            "--log-level",
            "info",
        )

    def kill(self, name: str) -> float:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        killed = time.time()
        proc.wait(10)
        shutil.rmtree(self.workdir / f"state-{name}", ignore_errors=True)
        return killed

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


async def _apply(bus: Bus) -> None:
    """`conveyor topology apply`, retried: a cluster just started may still be electing."""

    async def applied() -> bool:
        await bus.apply_topology()
        return True

    await _until(applied, 120, "the topology")


async def _owners(bus: Bus) -> dict[int, str | None]:
    entries = await bus.kv_entries(bus.topology.leases_bucket)
    table = {key: (entry.value, entry.revision) for key, entry in entries.items()}
    return Table.parse(table, bus.topology.partitions).owners()


async def _until(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if found := await probe():
                return found
        await asyncio.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what}")


async def _balanced(bus: Bus, names: set[str]) -> bool:
    owners = await _owners(bus)
    held = [owners[p] for p in owners]
    return None not in held and set(held) == names and len(set(held)) == len(names)


class DispatchTap:
    """Every dispatch published, as it goes by (core NATS): when, its id, its partition."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.seen: dict[str, float] = {}
        self.by_partition: dict[int, list[tuple[float, str]]] = {}

    async def on_message(self, subject: str, headers: Mapping[str, str], body: bytes) -> None:
        now = time.time()
        msg_id = headers.get("Nats-Msg-Id", "")
        try:
            run_id = json.loads(body)["run_id"]
        except (ValueError, KeyError, TypeError):
            return
        partition = self.topology.partition(run_id)
        self.by_partition.setdefault(partition, []).append((now, msg_id))
        self.seen.setdefault(msg_id, now)

    def first_new_after(self, partition: int, since: float, known: set[str]) -> float | None:
        for at, msg_id in self.by_partition.get(partition, []):
            if at > since and msg_id not in known:
                return at
        return None


async def _steady_load(client: Client, rate: float, stop: asyncio.Event) -> int:
    sent = 0
    while not stop.is_set():
        with contextlib.suppress(Exception):
            await client.trigger("bench_one", {"start": sent})
            sent += 1
        await asyncio.sleep(1 / rate)
    return sent


async def measure_takeover(
    workdir: Path, lease_s: float, snapshot_s: float, kills: int, rate: float
) -> dict[str, Any]:
    topology = Topology(namespace=f"{NAMESPACE}{int(lease_s * 10)}", partitions=2, replicas=3)
    with LocalCluster(workdir / "cluster") as cluster:
        setup = Setup(cluster, workdir, topology)
        bus = await Bus.connect(cluster.url, topology, name="bench-failover")
        await _apply(bus)
        client = Client(bus)
        tap = DispatchTap(topology)
        await bus.subscribe(f"{topology.namespace}.task.>", tap.on_message)
        stop = asyncio.Event()
        try:
            setup.spawn("worker", "worker", FLOWS)
            setup.replica("a", lease_s, snapshot_s)
            setup.replica("b", lease_s, snapshot_s)
            await _until(lambda: _balanced(bus, {"a", "b"}), 120, "two balanced replicas")
            await _until(lambda: client.registry.get("bench_one"), 120, "the worker")
            load = asyncio.create_task(_steady_load(client, rate, stop))
            await asyncio.sleep(max(3.0, snapshot_s * 1.5))
            takeovers = []
            for index in range(kills):
                victim = (await _owners(bus))[0]
                assert victim is not None
                known = set(tap.seen)
                killed = setup.kill(victim)
                first = await _until(
                    lambda k=known, t=killed: _first_new(tap, 0, t, k),
                    lease_s * 4 + 60,
                    "the successor's first transition",
                )
                takeovers.append(round(first - killed, 3))
                print(
                    f"  lease {lease_s:g}s kill {index + 1}: first transition after "
                    f"{first - killed:.2f}s (load {_load()})",
                    flush=True,
                )
                setup.replica(victim, lease_s, snapshot_s)
                await _until(lambda: _balanced(bus, {"a", "b"}), 120, "rebalanced")
                await asyncio.sleep(max(2.0, snapshot_s))
            stop.set()
            sent = await load
        finally:
            stop.set()
            setup.stop_all()
            await bus.close()
    return {
        "lease_s": lease_s,
        "snapshot_interval_s": snapshot_s,
        "runs_per_s": rate,
        "runs_triggered": sent,
        "kill_to_first_transition_s": takeovers,
        "median_s": statistics.median(takeovers),
        "max_s": max(takeovers),
        "steps": _takeover_steps(workdir),
    }


async def _first_new(tap: DispatchTap, partition: int, since: float, known: set[str]) -> float:
    return tap.first_new_after(partition, since, known) or 0.0


def _takeover_steps(workdir: Path) -> list[dict[str, Any]]:
    """The replicas' own account of each takeover with a predecessor (from their logs)."""
    out = []
    for log in sorted(workdir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "partition taken over" in line and "predecessors=[]" not in line:
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                out.append(
                    {k: fields.get(k) for k in ("partition", "takeover_s", "snapshot_bytes")}
                )
    return out


async def measure_restore(workdir: Path, runs: int) -> dict[str, Any]:
    from bench.seed import seed

    db = workdir / "seeded.db"
    seeded = await asyncio.to_thread(seed, db, runs)
    started = time.perf_counter()
    data = await asyncio.to_thread(dump, db)
    snapshot_s = time.perf_counter() - started
    topology = Topology(namespace=f"{NAMESPACE}restore", replicas=3)
    with LocalCluster(workdir / "cluster-restore") as cluster:
        bus = await Bus.connect(cluster.url, topology, name="bench-restore")
        try:
            await _apply(bus)
            started = time.perf_counter()
            await bus.put_snapshot("p0/e1/s1", data)
            put_s = time.perf_counter() - started
            started = time.perf_counter()
            fetched = await bus.get_snapshot("p0/e1/s1")
            get_s = time.perf_counter() - started
            started = time.perf_counter()
            await asyncio.to_thread(load, fetched, workdir / "restored.db")
            load_s = time.perf_counter() - started
            store = await bus.js.object_store(topology.snapshots_bucket)
            started = time.perf_counter()
            await store.get("p0/e1/s1")
            nats_py_get_s = time.perf_counter() - started
        finally:
            await bus.close()
    return {
        "runs": seeded["runs"],
        "store_mb": seeded["file_mb"],
        "snapshot_mb": round(len(data) / 2**20, 1),
        "snapshot_s": round(snapshot_s, 2),
        "upload_s": round(put_s, 2),
        "download_s": round(get_s, 2),
        "decompress_and_write_s": round(load_s, 2),
        "restore_s": round(get_s + load_s, 2),
        "nats_py_object_get_s": round(nats_py_get_s, 2),
        "load_average": _load(),
    }


async def measure_throughput(workdir: Path, replicas: int, runs: int) -> dict[str, Any]:
    """`replicas` lease-mode replicas, or (0) static mode's one orchestrator per partition."""
    topology = Topology(namespace=f"{NAMESPACE}tp{replicas}", partitions=4, replicas=3)
    with LocalCluster(workdir / f"cluster-tp{replicas}") as cluster:
        setup = Setup(cluster, workdir, topology)
        bus = await Bus.connect(cluster.url, topology, name="bench-throughput")
        await _apply(bus)
        client = Client(bus)
        try:
            for index in range(2):
                setup.spawn(f"tp-worker-{index}", "worker", FLOWS, "--concurrency", "64")
            if replicas:
                names = {f"r{i}" for i in range(replicas)}
                for name in names:
                    setup.replica(name, 5.0, 30.0)
                await _until(lambda: _balanced(bus, names), 120, f"{replicas} balanced replicas")
            else:
                for p in range(topology.partitions):
                    db = workdir / f"static-p{p}.db"
                    setup.spawn(f"static-p{p}", "orchestrator", f"--partition={p}", f"--db={db}")
            await _until(lambda: client.registry.get("bench_one"), 120, "the workers")
            await client.wait(await client.trigger("bench_one", {}), timeout=60)  # warm
            started = time.time()
            run_ids: list[str] = []
            for chunk in range(0, runs, 100):
                run_ids += await asyncio.gather(
                    *(client.trigger("bench_one", {"start": i}) for i in range(chunk, chunk + 100))
                )
            await _until(lambda: _all_succeeded(bus, run_ids), 600, "every run")
            wall = time.time() - started
        finally:
            setup.stop_all()
            await bus.close()
    return {
        "mode": "lease" if replicas else "static",
        "replicas": replicas or topology.partitions,
        "partitions": 4,
        "runs": runs,
        "wall_s": round(wall, 2),
        "tasks_per_s": round(runs / wall, 1),
        "load_average": _load(),
    }


async def _all_succeeded(bus: Bus, run_ids: list[str]) -> bool:
    """Whether the event stream holds a run.succeeded for every run (each run's outcome has a
    subject of its own). Read from the stream, polled: a core subscription tapping 2,000
    outcomes in a burst on a loaded machine missed some (a slow consumer), and waited for ever."""
    topo = bus.topology
    wanted = f"{topo.namespace}.evt.*.run.succeeded.*"
    try:
        info = await bus.js.stream_info(topo.events_stream, subjects_filter=wanted)
    except nats.errors.Error:  # an election: ask again
        return False
    ended = {subject.rsplit(".", 1)[1] for subject in info.state.subjects or {}}
    return ended.issuperset(run_ids)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "load_average_at_start": _load(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        workdir = Path(tmp)
        if "takeover" in args.only:
            print("takeover, default settings (lease 5 s, snapshot every 30 s)", flush=True)
            report["takeover_defaults"] = await measure_takeover(
                workdir / "defaults", 5.0, 30.0, args.kills, args.rate
            )
            print("takeover, lease at its minimum (1 s), a snapshot a second", flush=True)
            report["takeover_minimum"] = await measure_takeover(
                workdir / "minimum", 1.0, 1.0, args.kills, args.rate
            )
        if "restore" in args.only:
            print(f"restore of {args.restore_runs} finished runs", flush=True)
            report["restore"] = await measure_restore(workdir, args.restore_runs)
            print(json.dumps(report["restore"]), flush=True)
        report["throughput"] = []
        for replicas in (1, 2, 0) if "throughput" in args.only else ():
            mode = f"{replicas} replica(s)" if replicas else "static mode, 4 orchestrators"
            print(f"throughput, P = 4, {mode}", flush=True)
            result = await measure_throughput(workdir, replicas, args.runs)
            print(json.dumps(result), flush=True)
            report["throughput"].append(result)
    return report


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="runs/s during takeovers")
    parser.add_argument("--restore-runs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2_000, help="runs for the throughput")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "failover.json"))
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default={"takeover", "restore", "throughput"},
        help="comma-separated parts to measure: takeover, restore, throughput (default: all)",
    )
    args = parser.parse_args(argv)
    if unknown := args.only - {"takeover", "restore", "throughput"}:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
    if args.quick:
        args.kills, args.restore_runs, args.runs = 1, 2_000, 200
    report = asyncio.run(main(args))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    run()
