"""A run too big for one row per node on a terminal: a chain of 120 short tasks, for the CLI's
live view (`tests/e2e/test_cli_live_view.py`)."""

from __future__ import annotations

import time

from orchestrator import workflow
from workers import task

LENGTH = 120


@task
def tick(x: int) -> int:
    time.sleep(0.02)  # long enough for a person (and the test) to see the run move
    return x + 1


@workflow
def chain120(start: int = 0) -> int:
    value = start
    for _ in range(LENGTH):
        value = tick(value)
    return value
