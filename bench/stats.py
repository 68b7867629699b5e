"""Statistics and the W1/W2/W3 summaries, shared by every system the suite measures.

Standard library only: the peers' drivers import this module from the side virtualenv
(`bench/.venv-peers`), where Conveyor is not installed, so that Conveyor, Celery and taskiq are
summarised by the same code and their figures mean the same thing.

    W1  a chain of `n` no-op tasks: ms per task = (result received - just before the start) / n,
        and the hop (a task finished -> the next one started) from the run's own timestamps
    W2  a producer, `n` mapped no-ops and a reduce: tasks/s = (n + 2) / wall
    W3  `n` concurrent 3-task runs: runs/s = n / (last result received - first start)
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

# A W3 batch: when it began, and when each run's result was received (time.time()).
Batch = tuple[float, Sequence[float]]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def w1_summary(
    tasks: int, walls_s: Sequence[float], hops_s: Sequence[float], method: str
) -> dict[str, Any]:
    """`walls_s`: one end-to-end wall per measured chain; `hops_s`: every hop of those chains."""
    if not walls_s:
        raise ValueError("W1: no chain measured")
    out: dict[str, Any] = {
        "tasks": tasks,
        "chains": len(walls_s),
        "method": method,
        "walls_s": [round(w, 4) for w in walls_s],
        "ms_per_task": ms(statistics.median(walls_s) / tasks),
        "hops": len(hops_s),
    }
    if hops_s:
        out["hop_p50_ms"] = ms(percentile(hops_s, 50))
        out["hop_p99_ms"] = ms(percentile(hops_s, 99))
    return out


def w2_summary(items: int, walls_s: Sequence[float], method: str) -> dict[str, Any]:
    if not walls_s:
        raise ValueError("W2: no run measured")
    tasks = items + 2
    return {
        "items": items,
        "tasks": tasks,
        "runs": len(walls_s),
        "method": method,
        "walls_s": [round(w, 4) for w in walls_s],
        "wall_s": round(statistics.median(walls_s), 4),
        "tasks_per_s": round(tasks / statistics.median(walls_s), 1),
    }


def w3_summary(runs: int, batches: Sequence[Batch], method: str) -> dict[str, Any]:
    """`batches`: the measured batches (warm-up left out), each (began, every run's end)."""
    if not batches:
        raise ValueError("W3: no batch measured")
    walls = [max(ends) - began for began, ends in batches]
    latencies = [end - began for began, ends in batches for end in ends]
    return {
        "runs": runs,
        "tasks_per_run": 3,
        "repeats": len(batches),
        "method": method,
        "walls_s": [round(w, 4) for w in walls],
        "wall_s": round(statistics.median(walls), 4),
        "runs_per_s": round(runs / statistics.median(walls), 1),
        "run_latency_p50_ms": ms(percentile(latencies, 50)),
        "run_latency_p99_ms": ms(percentile(latencies, 99)),
    }


def stamped_hops(value: dict[str, Any], length: int) -> list[float]:
    """The hops of a peer's W1 chain from its result (`bench.peers.tasks.stamped`'s: the value
    and each task's (started, finished)): started(i+1) - finished(i)."""
    if value["value"] != length or len(value["stamps"]) != length:
        raise RuntimeError(f"W1 chain returned {value['value']}, expected {length}")
    return [b[0] - a[1] for a, b in itertools.pairwise(value["stamps"])]
