"""Workflows and tasks of the flow-control integration tests (docs/flow-control.md).

Tasks record what they did, with their own clock readings, one line per execution in
$CONVEYOR_TEST_DIR/flow.log (`<what> <key> <start> <end> <run>`; lines are appended whole, so
several worker processes can share the file): the tests read concurrency and rates from there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from orchestrator import workflow
from workers import current, task

LIMIT = 2
RATE = 20  # per second


def _record(what: str, key: str, start: float, end: float) -> None:
    path = Path(os.environ.get("CONVEYOR_TEST_DIR", "/tmp")) / "flow.log"
    line = f"{what} {key} {start:.6f} {end:.6f} {current().run_id}\n"
    with open(path, "a") as log:
        log.write(line)


def records(workdir: Path, what: str) -> list[tuple[str, float, float, str]]:
    path = workdir / "flow.log"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        kind, key, start, end, run_id = line.split()
        if kind == what:
            out.append((key, float(start), float(end), run_id))
    return out


@task
def hold(key: str, ms: int = 40) -> str:
    start = time.time()
    time.sleep(ms / 1000)
    _record("hold", key, start, time.time())
    return key


@workflow(concurrency={"limit": LIMIT, "key": "$.input.key"})
def per_key(key: str, ms: int = 40) -> str:
    """At most LIMIT runs per key at a time, across every run of the deployment."""
    return hold(key, ms)


@task(rate_limit=f"{RATE}/s")
def call_api(n: int) -> int:
    now = time.time()
    _record("call", "api", now, now)
    return n


@workflow
def rated(n: int = 0) -> int:
    """The task is admitted at most RATE times in any second, whatever the backlog."""
    return call_api(n)


@task
def summarise(what: str, count: int, ids: list[str]) -> dict[str, Any]:
    now = time.time()
    _record(what, str(count), now, now)
    return {"count": count, "ids": ids}


@workflow(on="com.example.tick", debounce={"period": 1.5, "key": "$.subject"})
def debounced(event: dict[str, Any], count: int = 1) -> dict[str, Any]:
    """One run `period` seconds after the last tick of a subject, with the last tick."""
    return summarise("debounced", count, [event["id"]])


@task
def ids_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


@workflow(on="com.example.order", batch={"max_size": 100, "max_wait": 1.5})
def batched(events: list[dict[str, Any]], count: int = 0) -> dict[str, Any]:
    """One run per 100 orders, or fewer 1.5 s after the first of a batch."""
    return summarise("batched", count, ids_of(events))


# The same with windows longer than an orchestrator's restart, for the kill -9 test: a window
# is measured on the collector's clock, so events the router could not hand on while the
# orchestrator was down (it runs the router) would otherwise arrive after a window that closed
# meanwhile — and start a second run, losing nothing (docs/flow-control.md).
@workflow(on="com.example.ping", debounce={"period": 10, "key": "$.subject"})
def debounced_patiently(event: dict[str, Any], count: int = 1) -> dict[str, Any]:
    return summarise("debounced_patiently", count, [event["id"]])


@workflow(on="com.example.invoice", batch={"max_size": 100, "max_wait": 10})
def batched_patiently(events: list[dict[str, Any]], count: int = 0) -> dict[str, Any]:
    return summarise("batched_patiently", count, ids_of(events))


TASKS = [hold, call_api, summarise, ids_of]
WORKFLOWS = [per_key, rated, debounced, batched, debounced_patiently, batched_patiently]
