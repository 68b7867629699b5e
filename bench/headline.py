"""W1, W2, W3 for Conveyor: the workloads measured side by side with every peer (issue 12).

    W1  bench_chain: 50 no-op tasks in a line            ms per task, hop p50/p99
    W2  bench_w2: a producer, 1,000 mapped no-ops, a sum tasks/s = 1,002 / wall
    W3  200 concurrent runs of bench_small (3 tasks)      runs/s = 200 / wall

Each on a deployment started as a `bench.deploy.Variant` says (the CLI's defaults, or the one
tuned variant), runs started with `Client.trigger` and awaited by their outcome events (the
run's output travels in them). Summarised by `bench.stats`, the same code as the peers'. The
floor the ratios are taken against is measured on the defaults' deployment, in the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import floor, stats
from bench.follow import Followed, trigger_batch
from bench.workloads import Sizes, chains, floor_hop, profile_while, progress

RUN_TIMEOUT_S = 600.0


async def floor_side_by_side(url: str, sizes: Sizes) -> dict[str, Any]:
    """The raw JetStream hop and the one-worker pipeline: the floors of W1 and of W2/W3."""
    hop = await floor_hop(url, sizes)
    pipeline = await floor.measure_pipeline(
        url, 1, sizes.floor_tput_seconds, warmup_s=min(2.0, sizes.tput_warmup_s)
    )
    return {
        **hop,
        "pipeline_workers": 1,
        "pipeline_results_per_s": round(pipeline.results_per_s),
        "pipeline_window": pipeline.window,
        "method": "hop: A publishes to a work-queue stream, B fetch(1)es, publishes to a limits "
        "stream, A fetch(1)es (bench.floor.measure); pipeline: 1 worker process, 2,000 "
        "messages in flight (bench.floor.measure_pipeline)",
    }


async def w1(followed: Followed, sizes: Sizes) -> dict[str, Any]:
    return await chains(followed, sizes.chain, sizes.chain_runs, tap_events=False)


async def w2(followed: Followed, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w2_items
    expected = n * (n + 1) // 2
    await followed.run("bench_w2", {"n": min(n, 100)}, timeout=RUN_TIMEOUT_S)  # warm-up
    walls: list[float] = []
    for _ in range(sizes.w2_runs):
        outcome, started = await followed.run("bench_w2", {"n": n}, timeout=RUN_TIMEOUT_S)
        if outcome.data.get("output") != expected:
            raise RuntimeError(f"W2 output {outcome.data.get('output')!r}, expected {expected}")
        walls.append(outcome.arrived - started)
    return stats.w2_summary(
        n,
        walls,
        "bench_w2 (produce -> noop.map -> total) started with Client.trigger, its "
        "run.succeeded event received",
    )


async def w3(followed: Followed, sizes: Sizes) -> dict[str, Any]:
    batches: list[stats.Batch] = []
    for _ in range(sizes.w3_repeats + 1):  # the first is a warm-up
        batch = await trigger_batch(
            followed, "bench_small", {"start": 0}, sizes.w3_runs, RUN_TIMEOUT_S
        )
        if any(o.data.get("output") != 3 for o in batch.outcomes):
            raise RuntimeError("a W3 run did not output 3")
        batches.append((batch.began, [o.arrived for o in batch.outcomes]))
    return stats.w3_summary(
        sizes.w3_runs,
        batches[1:],
        f"{sizes.w3_runs} x Client.trigger('bench_small') at once (asyncio.gather), outcome "
        "events awaited; latency = start of the batch -> outcome received",
    )


async def measure(followed: Followed, sizes: Sizes, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, fn in (("w1", w1), ("w2", w2), ("w3", w3)):
        progress(f"{name}: {label}")
        out[label] = await fn(followed, sizes)
        followed.deployment.check_alive()
    return out


async def profile(followed: Followed, sizes: Sizes, out_dir: Path) -> dict[str, Any]:
    """py-spy on the orchestrator and the worker while W1, then W2, then W3 run in a loop."""
    dep = followed.deployment
    targets = {"orchestrator": dep.orchestrator_pid, "worker": dep.worker_pids[0]}

    async def load_w1() -> None:
        await followed.run("bench_chain", {"start": 0}, timeout=RUN_TIMEOUT_S)

    async def load_w2() -> None:
        await followed.run("bench_w2", {"n": sizes.w2_items}, timeout=RUN_TIMEOUT_S)

    async def load_w3() -> None:
        await trigger_batch(followed, "bench_small", {"start": 0}, sizes.w3_runs, RUN_TIMEOUT_S)

    out: dict[str, Any] = {}
    for label, load in (("w1", load_w1), ("w2", load_w2), ("w3", load_w3)):
        progress(f"profiling {label} for {sizes.profile_seconds:.0f}s")
        out[label] = await profile_while(
            followed, targets, sizes.profile_seconds, out_dir / label, load
        )
    return out
