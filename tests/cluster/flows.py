"""The workload of the cluster tests, served by real `conveyor worker` processes.

Each task appends `<run> <node> <attempt> <start> <end>` to $CONVEYOR_TEST_DIR/tasks.log, so a
test can see from the tasks' own clocks when work stalled and how often each node ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from orchestrator import sleep, wait_for_event, workflow
from workers import current, task

STEPS = 4


@task
def hop(x: int) -> int:
    started = time.time()
    time.sleep(0.05)
    context = current()
    line = f"{context.run_id} {context.node_id} {context.attempt} {started:.3f} {time.time():.3f}\n"
    with open(Path(os.environ["CONVEYOR_TEST_DIR"]) / "tasks.log", "a") as log:
        log.write(line)
    return x + 1


@workflow
def relay(x: int = 0) -> int:
    for _ in range(STEPS):
        x = hop(x)
    return x


@workflow
def napper(seconds: float = 20.0) -> dict[str, Any]:
    """A run that outlives the event stream's retention in a durable sleep."""
    first = hop(0)
    nap = sleep(seconds)
    return {"first": first, "nap": nap, "after": hop(first)}


@workflow
def waiter(key: str) -> dict[str, Any]:
    """A run that outlives the event stream's retention waiting for an upstream event."""
    event = wait_for_event("com.example.approved", match={"subject": key}, timeout=600)
    return {"by": event["data"]["by"], "then": hop(1)}


@task
def gated(x: int) -> int:
    """Holds while $CONVEYOR_TEST_DIR/gate exists (a test keeps tasks in flight with it)."""
    gate = Path(os.environ["CONVEYOR_TEST_DIR"]) / "gate"
    deadline = time.monotonic() + 120
    while gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return x


@workflow
def held(x: int = 0) -> int:
    return gated(x)
