"""A run's timeline: one lane per node with a bar per attempt (queued from dispatch to start,
running from start to finish), and a mapped node as one lane whose density says how many of
its children ran at each moment — a 10,000-child fan-out is one row of 120 numbers, not 10,000
bars (pure: built from the run's detail and its children's spans)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .views import Density, Timeline, TimelineAttempt, TimelineLane

DENSITY_BINS = 120


def timeline_of(
    detail: Mapping[str, Any],
    spans: Mapping[str, Sequence[tuple[float, float | None]]],
    now: float,
    bins: int = DENSITY_BINS,
) -> Timeline:
    """`detail` as `Queries.run_detail` gives it; `spans` the children's (start, end) of each
    mapped node."""
    lanes = []
    for node_id, node in detail["nodes"].items():
        lane = TimelineLane(node_id=node_id, status=node["status"])
        if node.get("children") is not None:
            lane.mapped = True
            lane.children = node["children"]
            lane.density = density(spans.get(node_id, ()), now, bins)
        else:
            lane.attempts = [_attempt(a) for a in node.get("attempt_history") or []]
        lanes.append(lane)
    return Timeline(
        run_id=detail["run_id"],
        status=detail["status"],
        created_at=detail["created_at"],
        finished_at=detail.get("finished_at"),
        now=now,
        lanes=lanes,
    )


def _attempt(a: Mapping[str, Any]) -> TimelineAttempt:
    error = a.get("error")
    return TimelineAttempt(
        attempt=a["attempt"],
        status=a["status"],
        dispatched_at=a["dispatched_at"],
        started_at=a.get("started_at"),
        finished_at=a.get("finished_at"),
        worker=a.get("worker"),
        error_type=error.get("type") if isinstance(error, Mapping) else None,
    )


def density(
    spans: Sequence[tuple[float, float | None]], now: float, bins: int = DENSITY_BINS
) -> Density | None:
    """How many spans cover each of `bins` equal slices of their whole extent (a span still
    open ends `now`): a difference array, so the cost is spans + bins, not spans x bins."""
    if not spans:
        return None
    closed = [(start, now if end is None else max(start, end)) for start, end in spans]
    first = min(s for s, _ in closed)
    last = max(max(e for _, e in closed), first + 1e-3)
    width = (last - first) / bins
    delta = [0] * (bins + 1)
    for start, end in closed:
        low = min(bins - 1, int((start - first) / width))
        high = min(bins - 1, max(low, math.ceil((end - first) / width) - 1))
        delta[low] += 1
        delta[high + 1] -= 1
    counts, running = [], 0
    for step in delta[:bins]:
        running += step
        counts.append(running)
    return Density(start=first, end=last, bins=counts, peak=max(counts))
