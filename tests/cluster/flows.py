"""The workload of the cluster tests, served by real `conveyor worker` processes.

Each task appends `<run> <node> <attempt> <start> <end>` to $CONVEYOR_TEST_DIR/tasks.log, so a
test can see from the tasks' own clocks when work stalled and how often each node ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from orchestrator import workflow
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
