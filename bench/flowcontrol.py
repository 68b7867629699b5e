"""What flow control costs (docs/flow-control.md): a limit on the hop and on throughput.

The same work with and without limits, on one deployment (one orchestrator, one worker, the
CLI's defaults). The limits never bind (`bench.flows.ROOMY`): what is measured is the cost of
asking — a request to the limiter, its grant, the release after — not time spent waiting.

    hop          chains of `sizes.chain` no-ops: plain (`bench_chain`) and each task behind a task
                 concurrency limit keyed by lane (`bench_chain_limited`); hop = finished_at(i) ->
                 started_at(i+1) from the attempt history (its events' times in the stream), so
                 with a limit it holds the request and the grant
    throughput   `sizes.w3_runs` runs of 3 no-ops started at once: plain (`bench_small`), each
                 task limited (`bench_small_limited`), the run limited (`bench_small_run_limited`),
                 over `LANES` keys; and the task limit over one key (a key per customer costs a
                 limiter per key: the two should cost about the same)

    .venv/bin/python -m bench --only flow [--quick] [--out bench/results/<file>.json]

Measurements, never assertions.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from bench import workloads as w
from bench.follow import MAX_TRIGGERS_IN_FLIGHT, Followed
from bench.stats import ms, percentile

LANES = 50


async def measure(followed: Followed, sizes: w.Sizes) -> dict[str, Any]:
    hop = {
        name: await _chains(followed, workflow, sizes.chain, sizes.chain_runs)
        for name, workflow in (("none", "bench_chain"), ("task_limit", "bench_chain_limited"))
    }
    throughput = {}
    for name, workflow, lanes in (
        ("none", "bench_small", 0),  # no limit, so no key: its input has no lane
        ("task_limit", "bench_small_limited", LANES),
        ("run_limit", "bench_small_run_limited", LANES),
        ("one_key", "bench_small_limited", 1),  # keys cost little: one key against LANES
    ):
        throughput[name] = await _runs_per_s(followed, workflow, sizes.w3_runs, lanes)
    plain_hop, limited_hop = hop["none"]["hop_p50_ms"], hop["task_limit"]["hop_p50_ms"]
    plain_rate = throughput["none"]["runs_per_s"]
    return {
        "hop": hop,
        "throughput": throughput,
        "lanes": LANES,
        "overhead": {
            "hop_p50_ms": round(limited_hop - plain_hop, 2),
            "task_limit_throughput_ratio": round(
                throughput["task_limit"]["runs_per_s"] / plain_rate, 3
            ),
            "run_limit_throughput_ratio": round(
                throughput["run_limit"]["runs_per_s"] / plain_rate, 3
            ),
        },
    }


async def _chains(followed: Followed, workflow: str, length: int, repeat: int) -> dict[str, Any]:
    client = followed.client
    order = [node.id for node in (await client.registry.get(workflow)).spec.nodes]
    hops: list[float] = []
    per_task: list[float] = []
    for index in range(1 + repeat):  # the first warms the limiter and the caches up
        outcome, started = await followed.run(workflow, {"start": 0}, timeout=600)
        if index == 0:
            continue
        final = await client.status(outcome.run_id)
        assert final is not None and final["output"] == length, final
        attempts = [final["nodes"][n]["attempt_history"][-1] for n in order]
        hops += [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(attempts)]
        per_task.append((outcome.arrived - started) / length)
    return {
        "workflow": workflow,
        "tasks": length,
        "chains": repeat,
        "ms_per_task": ms(percentile(per_task, 50)),
        "hop_p50_ms": ms(percentile(hops, 50)),
        "hop_p99_ms": ms(percentile(hops, 99)),
    }


async def _runs_per_s(followed: Followed, workflow: str, count: int, lanes: int) -> dict[str, Any]:
    slots = asyncio.Semaphore(MAX_TRIGGERS_IN_FLIGHT)

    async def trigger(n: int) -> str:
        async with slots:
            lane = {"lane": f"lane-{n % lanes}"} if lanes else {}
            return await followed.client.trigger(workflow, lane)

    began = time.time()
    run_ids = await asyncio.gather(*(trigger(n) for n in range(count)))
    outcomes = [await followed.wait(run_id, 600) for run_id in run_ids]
    failed = [o for o in outcomes if o.status != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} {workflow} runs did not succeed")
    wall = max(o.arrived for o in outcomes) - began
    latencies = [o.arrived - began for o in outcomes]
    return {
        "workflow": workflow,
        "runs": count,
        "keys": lanes,
        "wall_s": round(wall, 3),
        "runs_per_s": round(count / wall, 1),
        "run_latency_p50_ms": ms(percentile(latencies, 50)),
    }
