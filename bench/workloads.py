"""The workloads of `python -m bench`: Conveyor (separate processes) next to the JetStream floor.

Each function takes a started `Deployment` (see `bench.deploy`) or makes its own, measures, and
returns a JSON-ready dict with `conveyor`, `floor` and `ratios` where those apply. Runs are
followed by their outcome events (a core-NATS tap), never by polling the status API while the
clock runs: a status request costs the orchestrator being measured a store read and a reply.
Every timestamp compared is from this host's clock (`time.time()` in every process).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import floor, profiling, seed, stats
from bench.deploy import (
    Deployment,
    EventTap,
    ce_time,
    proc_status_kib,
    reset_peak_rss,
    subject_parts,
)
from bench.follow import Followed, trigger_batch
from bench.stats import ms, percentile
from events.errors import BusError

# ---- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    chain: int = 50  # W1 and hop
    chain_runs: int = 5
    w2_items: int = 1_000
    w2_runs: int = 3
    w3_runs: int = 200
    w3_repeats: int = 3
    floor_hops: int = 500
    floor_simple_tput: int = 10_000
    start_runs: int = 500
    tput_workers: tuple[int, ...] = (1, 2, 4)
    tput_seconds: float = 30.0
    tput_warmup_s: float = 5.0
    tput_width: int = 100
    tput_concurrency: int = 20
    floor_tput_seconds: float = 15.0
    burst_runs: int = 1_000
    fanout_sizes: tuple[int, ...] = (10_000, 100_000)
    fanout_timeout_s: float = 900.0
    growth_runs: int = 1_000_000
    recovery_repeats: int = 3
    recovery_kill_after: int = 20  # tasks completed before the kill
    profile_seconds: float = 10.0  # 0: no profiles


QUICK = Sizes(
    chain=5,
    chain_runs=1,
    w2_items=20,
    w2_runs=1,
    w3_runs=10,
    w3_repeats=1,
    floor_hops=20,
    floor_simple_tput=200,
    start_runs=10,
    tput_workers=(1,),
    tput_seconds=2.0,
    tput_warmup_s=1.0,
    tput_width=10,
    tput_concurrency=4,
    floor_tput_seconds=1.0,
    burst_runs=20,
    fanout_sizes=(20, 50),
    fanout_timeout_s=120.0,
    growth_runs=1_000,
    recovery_repeats=1,
    recovery_kill_after=2,
    profile_seconds=0.0,
)


# ---- statistics ------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b > 0:
        return None
    return round(a / b, 2)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU cores used by some processes between `start()` and `stop()`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._before: dict[str, float | None] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            before, after = self._before.get(name), cpu_seconds(pid)
            if before is not None and after is not None and elapsed > 0:
                out[name] = round((after - before) / elapsed, 2)
        return out


# ---- the floor -------------------------------------------------------------------------------


async def floor_hop(url: str, sizes: Sizes) -> dict[str, Any]:
    result = await floor.measure(url, sizes.floor_hops, sizes.floor_simple_tput)
    return {
        "hops": len(result.round_trips_s),
        "hop_p50_ms": ms(percentile(result.round_trips_s, 50)),
        "hop_p99_ms": ms(percentile(result.round_trips_s, 99)),
        "simple_publish_async_msgs_per_s": round(result.publish_async_msgs_per_s),
        "simple_fetch_ack_msgs_per_s": round(result.fetch_ack_msgs_per_s),
    }


# ---- helpers over a deployment ---------------------------------------------------------------


async def chains(
    followed: Followed, length: int, repeat: int, *, warmup: int = 1, tap_events: bool = True
) -> dict[str, Any]:
    """Linear chains of `length` no-ops (W1): ms per task = (outcome received - just before
    `trigger`) / length; per-hop latencies from the status's attempt history (orchestrator-
    applied: finished_at(i) -> started_at(i+1)), read after each run; with `tap_events`, also
    from the events' ce-time (worker-stamped: task.completed(i) -> task.started(i+1)), which
    costs this process a message per event while the chain runs."""
    client = followed.client
    order = [node.id for node in (await client.registry.get("bench_chain")).spec.nodes]
    if len(order) != length:
        raise RuntimeError(f"bench_chain has {len(order)} nodes, expected {length}")
    stamps: dict[str, dict[str, float]] = {}  # run -> "node:verb" -> ce-time

    def on_task(subject: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
        _, verb, run_id = subject_parts(subject)
        parts = headers.get("ce-id", "").split(":")
        when = ce_time(headers)
        if len(parts) != 4 or when is None:
            return
        seen = stamps.setdefault(run_id, {})
        seen[f"{parts[1]}:{verb}"] = when
        if verb == "completed":
            # A short task sends no task.started: its result says how long it ran.
            ran_s = json.loads(body).get("ran_s")
            if ran_s is not None:
                seen.setdefault(f"{parts[1]}:started", when - float(ran_s))

    tap = EventTap(client)
    tap.add(on_task)
    if tap_events:
        await tap.start("evt.*.task.started.*", "evt.*.task.completed.*")
    walls: list[float] = []
    hops: list[float] = []
    evt_hops: list[float] = []
    spans: list[float] = []
    try:
        for index in range(warmup + repeat):
            outcome, started = await followed.run("bench_chain", {"start": 0}, timeout=600)
            if index < warmup:
                continue
            final = await client.status(outcome.run_id)
            assert final is not None
            if final["output"] != length:
                raise RuntimeError(f"chain output {final['output']!r}, expected {length}")
            attempts = [final["nodes"][n]["attempt_history"][-1] for n in order]
            hops += [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(attempts)]
            seen = stamps.get(outcome.run_id, {})
            evt_hops += [
                seen[f"{b}:started"] - seen[f"{a}:completed"]
                for a, b in itertools.pairwise(order)
                if f"{a}:completed" in seen and f"{b}:started" in seen
            ]
            spans += [a["finished_at"] - a["started_at"] for a in attempts]
            walls.append(outcome.arrived - started)
    finally:
        await tap.stop()
    result = stats.w1_summary(
        length,
        walls,
        hops,
        "bench_chain started with Client.trigger, its run.succeeded event received; hop from "
        "the run's attempt history (orchestrator-applied finished_at -> next started_at)",
    )
    result["span_p50_ms"] = ms(percentile(spans, 50))
    if evt_hops:
        result["evt_hop_p50_ms"] = ms(percentile(evt_hops, 50))
        result["evt_hop_p99_ms"] = ms(percentile(evt_hops, 99))
    return result


async def profile_while(
    followed: Followed,
    targets: Mapping[str, int],
    seconds: float,
    out_dir: Path,
    load: Any,
) -> dict[str, Any]:
    """py-spy on each target pid for `seconds` while `load()` (a coroutine fn) runs in a loop."""
    recordings = {
        name: profiling.Recording(pid, out_dir / f"{name}.pyspy.txt", seconds)
        for name, pid in targets.items()
    }
    for rec in recordings.values():
        await rec.start()
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await load()

    runner = asyncio.create_task(loop())
    try:
        summaries = {name: await rec.wait() for name, rec in recordings.items()}
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner, 120)
    return summaries


# ---- hop, start, recovery: one orchestrator, one worker --------------------------------------


async def hop(followed: Followed, sizes: Sizes, floor_result: dict[str, Any]) -> dict[str, Any]:
    conveyor = await chains(followed, sizes.chain, sizes.chain_runs)
    return {
        "conveyor": conveyor,
        "floor": {k: floor_result[k] for k in ("hops", "hop_p50_ms", "hop_p99_ms")},
        "ratios": {
            "hop_p50": ratio(conveyor.get("hop_p50_ms"), floor_result["hop_p50_ms"]),
            "hop_p99": ratio(conveyor.get("hop_p99_ms"), floor_result["hop_p99_ms"]),
            "evt_hop_p50": ratio(conveyor.get("evt_hop_p50_ms"), floor_result["hop_p50_ms"]),
            "ms_per_task_over_hop_p50": ratio(conveyor["ms_per_task"], floor_result["hop_p50_ms"]),
        },
    }


async def profile_hop(followed: Followed, sizes: Sizes, out_dir: Path) -> dict[str, Any]:
    dep = followed.deployment

    async def load() -> None:
        await followed.run("bench_chain", {"start": 0}, timeout=600)

    targets = {"orchestrator": dep.orchestrator_pid, "worker": dep.worker_pids[0]}
    return await profile_while(followed, targets, sizes.profile_seconds, out_dir / "hop", load)


async def start_latency(
    followed: Followed, sizes: Sizes, floor_result: dict[str, Any]
) -> dict[str, Any]:
    """`run.requested` published -> first task started, over sequential one-task runs: the
    ce-time of the run.requested event (stamped by the client as it builds the event, just
    before publishing) to the ce-time of the task.started event (stamped by the worker as it
    starts the task) — or, for a short task, which folds its start into its result, the
    result's ce-time minus the `ran_s` it reports. Split at the ce-time of the task.dispatched
    message (stamped by the orchestrator as it applies the request)."""
    client = followed.client
    marks: dict[str, dict[str, float]] = {}

    def on_event(subject: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
        run_id, when = headers.get("ce-runid"), ce_time(headers)
        if run_id is None or when is None:
            return
        kind = "dispatched" if ".task." in subject and ".evt." not in subject else subject
        if kind != "dispatched":
            noun, verb, _ = subject_parts(subject)
            kind = f"{noun}.{verb}"
            if kind == "task.completed":
                ran_s = json.loads(body).get("ran_s")
                if ran_s is None:
                    return
                kind, when = "task.started", when - float(ran_s)
        marks.setdefault(run_id, {}).setdefault(kind, when)

    tap = EventTap(client)
    tap.add(on_event)
    await tap.start(
        "evt.*.run.requested.*", "evt.*.task.started.*", "evt.*.task.completed.*", "task.>"
    )
    warmup = 5
    totals: list[float] = []
    to_dispatch: list[float] = []
    to_started: list[float] = []
    try:
        for index in range(warmup + sizes.start_runs):
            outcome, _ = await followed.run("bench_one", {"start": 0}, timeout=60)
            if index < warmup:
                continue
            m = marks.get(outcome.run_id, {})
            if "run.requested" in m and "task.started" in m:
                totals.append(m["task.started"] - m["run.requested"])
                if "dispatched" in m:
                    to_dispatch.append(m["dispatched"] - m["run.requested"])
                    to_started.append(m["task.started"] - m["dispatched"])
    finally:
        await tap.stop()
    if not totals:
        raise RuntimeError("start: no run had both its run.requested and task.started events")
    conveyor: dict[str, Any] = {
        "runs": len(totals),
        "method": "event ce-time: run.requested (client) -> task.started (worker)",
        "p50_ms": ms(percentile(totals, 50)),
        "p99_ms": ms(percentile(totals, 99)),
        "requested_to_dispatched_p50_ms": ms(percentile(to_dispatch, 50)) if to_dispatch else None,
        "dispatched_to_started_p50_ms": ms(percentile(to_started, 50)) if to_started else None,
    }
    return {
        "conveyor": conveyor,
        "floor": {k: floor_result[k] for k in ("hop_p50_ms", "hop_p99_ms")},
        "ratios": {
            "p50": ratio(conveyor["p50_ms"], floor_result["hop_p50_ms"]),
            "p99": ratio(conveyor["p99_ms"], floor_result["hop_p99_ms"]),
        },
    }


async def recovery(followed: Followed, sizes: Sizes) -> dict[str, Any]:
    """kill -9 the orchestrator while a chain runs, start it again at once on the same store;
    the first transition applied = the first committed change of the run after the kill (its
    `updated_at` in the store file moving on, seen by polling it every 5 ms: the stored value is
    its event's time in the stream, not when it was applied)."""
    samples: list[dict[str, Any]] = []
    for _ in range(sizes.recovery_repeats):
        sample = await _recover_once(followed, sizes.recovery_kill_after)
        samples.append(sample)
        progress(f"recovery: {sample}")
        await followed.deployment.wait_ready()
    firsts = [s["first_transition_ms"] for s in samples if s["first_transition_ms"] is not None]
    return {
        "conveyor": {
            "samples": samples,
            "method": "kill -9 -> new process spawned at once -> first committed change of the "
            "interrupted run (its updated_at in the store)",
            "first_transition_ms_median": round(statistics.median(firsts), 1) if firsts else None,
            "first_transition_ms_max": max(firsts) if firsts else None,
        }
    }


async def _recover_once(followed: Followed, kill_after: int) -> dict[str, Any]:
    dep = followed.deployment
    client = followed.client
    completed: set[str] = set()
    reached = asyncio.Event()

    def on_completed(subject: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
        completed.add(headers.get("ce-id", ""))
        if len(completed) >= kill_after:
            reached.set()

    run_id = await client.trigger("bench_chain", {"start": 0})
    tap = EventTap(client)
    tap.add(on_completed)
    await tap.start(f"evt.*.task.completed.{run_id}")
    try:
        await asyncio.wait_for(reached.wait(), 120)
    finally:
        await tap.stop()
    # A crash comes at any point of the engine's loop: land somewhere in the next few ms.
    await asyncio.sleep(random.uniform(0, 0.005))
    killed_at = time.time()
    dep.kill_orchestrator()
    committed = await asyncio.to_thread(_updated_at, dep.db, run_id)
    spawned_at = time.time()
    dep.spawn_orchestrator()
    serving_at: float | None = None

    async def until_serving() -> None:
        nonlocal serving_at
        while True:
            try:
                await client.status(run_id)
            except BusError:
                await asyncio.sleep(0.01)
                continue
            serving_at = time.time()
            return

    serving = asyncio.create_task(until_serving())
    first_applied = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        current = await asyncio.to_thread(_updated_at, dep.db, run_id)
        if current is not None and committed is not None and current > committed:
            first_applied = time.time()
            break
        dep.check_alive()
        await asyncio.sleep(0.005)
    outcome = await followed.wait(run_id, timeout=300)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(serving, 30)
    return {
        "run_id": run_id,
        "killed_after_tasks": len(completed),
        "restart_ms": ms(spawned_at - killed_at),
        # The new process answers its status API (it has opened the store, connected, made
        # its consumer and flushed the outbox): what a restart costs by itself.
        "api_serving_ms": ms(serving_at - killed_at) if serving_at else None,
        "first_transition_ms": ms(first_applied - killed_at) if first_applied else None,
        "run_finished_ms": ms(outcome.arrived - killed_at),
        "status": outcome.status,
    }


def _updated_at(db: Path, run_id: str) -> float | None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT updated_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return float(row[0]) if row else None


# ---- throughput --------------------------------------------------------------------------------


async def throughput_one(
    followed: Followed, sizes: Sizes, workers: int, profile_dir: Path | None
) -> dict[str, Any]:
    """With `workers` worker processes: the floor pipeline, then Conveyor sustained (a closed
    loop of `tput_concurrency` runs, each a no-op mapped over `tput_width` items then a sum,
    re-triggered as each ends), then a burst of `burst_runs` concurrent 3-task runs."""
    dep = followed.deployment
    progress(f"throughput x{workers}: floor pipeline")
    fl = await floor.measure_pipeline(
        dep.url, workers, sizes.floor_tput_seconds, warmup_s=min(2.0, sizes.tput_warmup_s)
    )
    progress(f"throughput x{workers}: conveyor sustained {sizes.tput_seconds:.0f}s")
    sustained = await _sustained(followed, sizes, workers)
    progress(f"throughput x{workers}: burst of {sizes.burst_runs} 3-task runs")
    try:
        burst = await _burst(followed, sizes.burst_runs)
    except (BusError, RuntimeError, TimeoutError) as exc:
        # Recorded, not raised: the sustained figures above stand on their own.
        dep.check_alive()
        burst = {"runs": sizes.burst_runs, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    result: dict[str, Any] = {
        "workers": workers,
        "conveyor": {**sustained, "burst": burst},
        "floor": {
            "pipeline_results_per_s": round(fl.results_per_s),
            "pipeline_window": fl.window,
            "pipeline_seconds": fl.seconds,
        },
    }
    result["ratios"] = {
        "tasks_per_s": ratio(sustained["tasks_per_s"], fl.results_per_s),
        # A 3-task run is at least three task round trips.
        "burst_runs_per_s": ratio(burst.get("runs_per_s"), fl.results_per_s / 3),
    }
    if profile_dir is not None and sizes.profile_seconds > 0:
        progress(f"throughput x{workers}: profiling for {sizes.profile_seconds:.0f}s")
        items = list(range(sizes.tput_width))

        async def load() -> None:
            await asyncio.gather(
                *(
                    followed.run("bench_fanout", {"items": items}, timeout=300)
                    for _ in range(sizes.tput_concurrency)
                )
            )

        targets = {"orchestrator": dep.orchestrator_pid, "worker": dep.worker_pids[0]}
        result["profile"] = await profile_while(
            followed, targets, sizes.profile_seconds, profile_dir / f"throughput-x{workers}", load
        )
    return result


async def _sustained(followed: Followed, sizes: Sizes, workers: int) -> dict[str, Any]:
    dep = followed.deployment
    items = list(range(sizes.tput_width))
    per_run = sizes.tput_width + 1
    finished: list[float] = []
    begin = time.time()
    window = (begin + sizes.tput_warmup_s, begin + sizes.tput_warmup_s + sizes.tput_seconds)

    run_ids: list[str] = []

    async def loop() -> None:
        while time.time() < window[1]:
            outcome, _ = await followed.run("bench_fanout", {"items": items}, timeout=300)
            finished.append(outcome.arrived)
            run_ids.append(outcome.run_id)

    meter = CpuMeter(
        {"orchestrator": dep.orchestrator_pid}
        | {f"worker-{i}": pid for i, pid in enumerate(dep.worker_pids)}
        | ({"nats-server": dep.server.proc.pid} if dep.server.proc else {})
    )

    async def measure_cpu() -> dict[str, float]:
        await asyncio.sleep(max(0.0, window[0] - time.time()))
        meter.start()
        await asyncio.sleep(max(0.0, window[1] - time.time()))
        return meter.stop()

    cpu_task = asyncio.create_task(measure_cpu())
    await asyncio.gather(*(loop() for _ in range(sizes.tput_concurrency)))
    cpu = await cpu_task
    runs_in_window = sum(1 for t in finished if window[0] <= t < window[1])
    waits = await asyncio.to_thread(_dispatch_to_start, dep.db, run_ids[-200:])
    return {
        "method": f"closed loop: {sizes.tput_concurrency} concurrent runs of bench_fanout "
        f"({sizes.tput_width} no-ops + 1 sum = {per_run} tasks), each re-triggered as it ends; "
        f"runs ended in a {sizes.tput_seconds:.0f}s window after {sizes.tput_warmup_s:.0f}s "
        "of warm-up, x tasks per run",
        "runs_in_window": runs_in_window,
        "tasks_per_s": round(runs_in_window * per_run / sizes.tput_seconds, 1),
        "runs_per_s": round(runs_in_window / sizes.tput_seconds, 2),
        "cpu_cores": cpu,
        "orchestrator_peak_rss_mib": _mib(proc_status_kib(dep.orchestrator_pid, "VmHWM")),
        # Where a task waits: orchestrator-applied dispatched_at -> started_at, over the
        # tasks of the last runs (a long tail here is time a task sat in a queue or a fetch).
        "dispatch_to_start": waits,
    }


def _dispatch_to_start(db: Path, run_ids: list[str]) -> dict[str, Any]:
    import json

    waits: list[float] = []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        for run_id in run_ids:
            for (data,) in con.execute("SELECT data FROM nodes WHERE run_id = ?", (run_id,)):
                for attempt in json.loads(data).get("attempts", []):
                    if attempt.get("started_at") and attempt.get("dispatched_at"):
                        waits.append(attempt["started_at"] - attempt["dispatched_at"])
    finally:
        con.close()
    if not waits:
        return {}
    return {
        "tasks": len(waits),
        "p50_ms": ms(percentile(waits, 50)),
        "p99_ms": ms(percentile(waits, 99)),
        "max_ms": ms(max(waits)),
        "over_500ms": sum(1 for v in waits if v > 0.5),
    }


async def _burst(followed: Followed, count: int) -> dict[str, Any]:
    """`count` 3-task runs started at once with `Client.trigger` (W3's shape, at the burst's
    size); runs/s = count / (last outcome event's arrival - first trigger)."""
    batch = await trigger_batch(followed, "bench_small", {"start": 0}, count, timeout=600)
    ends = batch.latencies_s
    return {
        "runs": count,
        "tasks_per_run": 3,
        "wall_s": round(batch.wall_s, 3),
        "runs_per_s": round(count / batch.wall_s, 1),
        "run_latency_p50_ms": ms(percentile(ends, 50)),
        "run_latency_p99_ms": ms(percentile(ends, 99)),
    }


def _mib(kib: int | None) -> float | None:
    return round(kib / 1024, 1) if kib is not None else None


# ---- fan-out ---------------------------------------------------------------------------------


async def fanout(followed: Followed, sizes: Sizes) -> dict[str, Any]:
    dep = followed.deployment
    out: dict[str, Any] = {}
    for size in sizes.fanout_sizes:
        progress(f"fan-out of {size}")
        out[str(size)] = await _fanout_one(followed, size, sizes.fanout_timeout_s)
        progress(f"fan-out of {size}: {out[str(size)]}")
        if "error" in out[str(size)] and dep.processes["orchestrator"].poll() is not None:
            break  # the orchestrator died: the next size would measure nothing
    return {"conveyor": out}


async def _fanout_one(followed: Followed, size: int, timeout: float) -> dict[str, Any]:
    dep = followed.deployment
    pid = dep.orchestrator_pid
    rss_before = proc_status_kib(pid, "VmRSS")
    reset = reset_peak_rss(pid)
    result: dict[str, Any] = {
        "items": size,
        "tasks": size + 1,
        "orchestrator_rss_before_mib": _mib(rss_before),
        "peak_rss_reset": reset,
    }
    peak_seen = rss_before or 0

    async def watch_rss() -> None:
        nonlocal peak_seen
        while True:
            peak_seen = max(peak_seen, proc_status_kib(pid, "VmRSS") or 0)
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch_rss())
    begin = time.time()
    stage = "trigger (client: validate input, publish run.requested)"
    run_id: str | None = None
    try:
        run_id = await followed.client.trigger("bench_fanout", {"items": list(range(size))})
        result["run_id"] = run_id
        stage = "waiting for the run's outcome event"
        outcome = await followed.wait(run_id, timeout)
        if outcome.status != "succeeded":
            result["error"] = f"run {outcome.status}: {outcome.data.get('error')}"
            result["where"] = "the run itself (its outcome event)"
        else:
            expected = size * (size + 1) // 2
            if outcome.data.get("output") != expected:
                result["error"] = f"output {outcome.data.get('output')!r}, expected {expected}"
                result["where"] = "the run's output"
            end = outcome.ce_time or outcome.arrived
            result["wall_s"] = round(end - begin, 3)
            result["tasks_per_s"] = round((size + 1) / (end - begin), 1)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        result["where"] = stage
        if dep.processes["orchestrator"].poll() is not None:
            result["orchestrator_exit"] = dep.processes["orchestrator"].returncode
            result["orchestrator_log_tail"] = dep.log_tail("orchestrator", 2000)
    finally:
        watcher.cancel()
    hwm = proc_status_kib(pid, "VmHWM")
    result["orchestrator_peak_rss_mib"] = _mib(hwm if reset and hwm else peak_seen)
    result["orchestrator_rss_after_mib"] = _mib(proc_status_kib(pid, "VmRSS"))
    if run_id is not None and dep.processes["orchestrator"].poll() is None:
        # The status API on the finished run: its reply carries the run's input and each
        # node's input (the sum's input is every output) — does it still fit a NATS message?
        started = time.perf_counter()
        try:
            status = await followed.client.status(run_id)
            result["status_reply"] = {
                "ok": status is not None,
                "ms": ms(time.perf_counter() - started),
                "run_status": status["status"] if status else None,
            }
        except (BusError, Exception) as exc:
            result["status_reply"] = {
                "ok": False,
                "ms": ms(time.perf_counter() - started),
                "error": f"{type(exc).__name__}: {exc}"[:500],
            }
    return result


# ---- growth ----------------------------------------------------------------------------------


async def growth(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """The hop again on a store already holding `growth_runs` finished runs, against the hop on
    an empty store measured just before with the same layout."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="empty-", dir=workdir) as empty_dir:
        out["empty"] = await _chains_on(Path(empty_dir), None, sizes)
    seeded_dir = Path(tempfile.mkdtemp(prefix="seeded-", dir=workdir))
    db = seeded_dir / "conveyor.db"
    progress(f"growth: seeding {sizes.growth_runs} finished runs")
    out["seed"] = await asyncio.to_thread(seed.seed, db, sizes.growth_runs)
    progress(f"growth: seeded {out['seed']}")
    out["seeded"] = await _chains_on(seeded_dir, db, sizes)
    await asyncio.to_thread(shutil.rmtree, seeded_dir, True)
    empty, seeded = out["empty"], out["seeded"]
    return {
        "conveyor": out,
        "ratios": {
            "hop_p50": ratio(seeded.get("hop_p50_ms"), empty.get("hop_p50_ms")),
            "hop_p99": ratio(seeded.get("hop_p99_ms"), empty.get("hop_p99_ms")),
            "ms_per_task": ratio(seeded["ms_per_task"], empty["ms_per_task"]),
        },
    }


async def _chains_on(workdir: Path, db: Path | None, sizes: Sizes) -> dict[str, Any]:
    dep = Deployment(workdir, workers=1, chain_length=sizes.chain, db=db)
    try:
        await dep.start()
        followed = Followed(dep)
        await followed.start()
        result = await chains(followed, sizes.chain, sizes.chain_runs)
        result["stored_runs"] = await asyncio.to_thread(_count_runs, dep.db)
        await followed.stop()
        return result
    except BaseException:
        print(dep.logs(), file=sys.stderr)
        raise
    finally:
        await dep.stop()


def _count_runs(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    finally:
        con.close()
