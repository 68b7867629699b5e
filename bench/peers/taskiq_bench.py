"""Driver of the taskiq + taskiq-nats peer (runs in bench/.venv-peers; prints one JSON line).

    bench/.venv-peers/bin/python -m bench.peers.taskiq_bench --url nats://... [sizes]

Distributed, like Conveyor: `taskiq worker bench.peers.taskiq_app:broker --workers N` runs N
worker processes (plus taskiq's supervisor process) against the same nats-server binary; this
driver kicks tasks from its own process. Workloads, where they apply:

- hop: a chain of `--chain` steps choreographed by the tasks (each kicks the next): the
  completion -> next start latency (kick of step i+1 -> step i+1 starts) and the chain's
  wall / steps, over `--chain-runs` chains (after one warm-up chain).
- start: kick -> the task started, over `--start-runs` sequential one-step chains.
- throughput: `counted_noop` tasks kept `--window` in flight (each completion kicks one more),
  completions counted over `--seconds` after `--warmup`; with 1, 2, 4 worker processes.
- burst: `--burst` 3-step chains kicked at once; runs/s = runs / time to the last one's end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats

from bench.peers.taskiq_app import DONE, TIMING, broker, chain_step, counted_noop

ROOT = Path(__file__).resolve().parents[2]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Driver:
    def __init__(self, url: str) -> None:
        self.url = url
        self.steps: dict[str, dict[int, dict[str, float]]] = {}
        self.done_count = 0
        self.done_times: list[float] = []
        self.on_step: Any = None

    async def connect(self) -> None:
        self.nc = await nats.connect(self.url)

        async def on_timing(msg: Any) -> None:
            report = json.loads(msg.data)
            self.steps.setdefault(report["run"], {})[report["i"]] = report
            if self.on_step is not None:
                self.on_step(report)

        async def on_done(msg: Any) -> None:
            self.done_count += 1
            self.done_times.append(time.time())

        await self.nc.subscribe(TIMING, cb=on_timing)
        await self.nc.subscribe(DONE, cb=on_done)
        await self.nc.flush()
        await broker.startup()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await broker.shutdown()
        with contextlib.suppress(Exception):
            await self.nc.close()

    async def chain(self, n: int, timeout: float = 120) -> dict[int, dict[str, float]]:
        run = uuid.uuid4().hex
        finished = asyncio.get_running_loop().create_future()

        def on_step(report: dict[str, Any]) -> None:
            if report["run"] == run and report["i"] == n - 1 and not finished.done():
                finished.set_result(None)

        self.on_step = on_step
        await chain_step.kiq(run, 0, n, time.time())
        await asyncio.wait_for(finished, timeout)
        self.on_step = None
        return self.steps[run]


def start_workers(url: str, workers: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("taskiq")),
                "worker",
                "bench.peers.taskiq_app:broker",
                "--workers",
                str(workers),
                "--max-async-tasks",
                "64",
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env={**os.environ, "BENCH_NATS_URL": url},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_workers(proc: subprocess.Popen[bytes]) -> None:
    # taskiq's supervisor forwards SIGTERM to its children; its session holds them all.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def hop(driver: Driver, n: int, runs: int) -> dict[str, Any]:
    await driver.chain(n)  # warm-up
    hops: list[float] = []
    walls: list[float] = []
    for _ in range(runs):
        steps = await driver.chain(n)
        hops += [steps[i]["started"] - steps[i]["prev_done"] for i in range(1, n)]
        walls.append((steps[n - 1]["done"] - steps[0]["prev_done"]) / n)
    return {
        "method": "choreographed chain: each task kicks the next; hop = kick -> next start",
        "tasks": n,
        "hop_p50_ms": round(_pct(hops, 50) * 1000, 3),
        "hop_p99_ms": round(_pct(hops, 99) * 1000, 3),
        "wall_ms_per_task": round(sorted(walls)[len(walls) // 2] * 1000, 3),
    }


async def start(driver: Driver, runs: int) -> dict[str, Any]:
    latencies: list[float] = []
    for index in range(runs + 3):
        steps = await driver.chain(1)
        if index >= 3:
            latencies.append(steps[0]["started"] - steps[0]["prev_done"])
    return {
        "method": "time before kiq -> task started (worker clock), sequential",
        "runs": runs,
        "p50_ms": round(_pct(latencies, 50) * 1000, 3),
        "p99_ms": round(_pct(latencies, 99) * 1000, 3),
    }


async def throughput(driver: Driver, window: int, warmup: float, seconds: float) -> dict[str, Any]:
    driver.done_times.clear()
    stop = asyncio.Event()
    kicked = 0

    async def sender() -> None:
        nonlocal kicked
        while not stop.is_set():
            target = driver.done_count + window
            while kicked < target and not stop.is_set():
                await asyncio.gather(
                    *(counted_noop.kiq(i) for i in range(min(100, target - kicked)))
                )
                kicked += min(100, target - kicked)
            await asyncio.sleep(0.001)

    begin = time.time()
    tasks = [asyncio.create_task(sender())]
    await asyncio.sleep(warmup + seconds)
    stop.set()
    await asyncio.gather(*tasks)
    lo, hi = begin + warmup, begin + warmup + seconds
    counted = sum(1 for t in driver.done_times if lo <= t < hi)
    # Let the rest drain before the next measurement.
    for _ in range(1200):
        if driver.done_count >= kicked:
            break
        await asyncio.sleep(0.1)
    return {"tasks_per_s": round(counted / seconds, 1), "window": window}


async def burst(driver: Driver, count: int) -> dict[str, Any]:
    runs = [uuid.uuid4().hex for _ in range(count)]
    wanted = set(runs)
    ends: dict[str, float] = {}
    all_done = asyncio.get_running_loop().create_future()

    def on_step(report: dict[str, Any]) -> None:
        if report["run"] in wanted and report["i"] == 2:
            ends[report["run"]] = time.time()
            if len(ends) == count and not all_done.done():
                all_done.set_result(None)

    driver.on_step = on_step
    begin = time.time()
    await asyncio.gather(*(chain_step.kiq(run, 0, 3, time.time()) for run in runs))
    await asyncio.wait_for(all_done, 600)
    driver.on_step = None
    wall = max(ends.values()) - begin
    return {"runs": count, "runs_per_s": round(count / wall, 1), "wall_s": round(wall, 3)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": f"taskiq {importlib.metadata.version('taskiq')}, taskiq-nats "
        f"{importlib.metadata.version('taskiq-nats')}",
        "layout": "distributed: driver process + `taskiq worker --workers N` (N worker "
        "processes + a supervisor), PullBasedJetStreamBroker defaults, same nats-server binary",
        "layout_short": "distributed",
        "throughput": {},
        "burst": {},
    }
    log = Path(args.log)
    driver = Driver(args.url)
    await driver.connect()
    try:
        for workers in args.workers:
            proc = start_workers(args.url, workers, log)
            try:
                await driver.chain(1, timeout=60)  # the workers serve
                await asyncio.sleep(1.0)  # every worker process has attached
                if workers == args.workers[0]:
                    out["hop"] = await hop(driver, args.chain, args.chain_runs)
                    out["start"] = await start(driver, args.start_runs)
                out["throughput"][str(workers)] = await throughput(
                    driver, args.window, args.warmup, args.seconds
                )
                out["burst"][str(workers)] = await burst(driver, args.burst)
            finally:
                stop_workers(proc)
    finally:
        await driver.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument("--chain-runs", type=int, default=5)
    parser.add_argument("--start-runs", type=int, default=500)
    parser.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")], default=[1])
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--log", default="/dev/null")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    main()
