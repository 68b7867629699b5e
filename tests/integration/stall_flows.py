"""A task whose first delivery stalls until the test releases it (the test SIGSTOPs its worker
meanwhile), then returns a value that tells which delivery produced the run's output."""

from __future__ import annotations

import time

from orchestrator import workflow
from tests.integration.flows import _dir, _record
from workers import current, task

STALL_LIMIT_S = 120.0


@task
def stall_first_time(x: int) -> str:
    delivery = current().delivery
    _record(f"stall_first_time:{delivery}")
    if delivery == 1:
        (_dir() / "stalled.started").touch()
        # User code that waits on the outside world; the test releases it once the run is over.
        deadline = time.monotonic() + STALL_LIMIT_S
        while not (_dir() / "stalled.release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _record("stall_first_time:late-finish")
        return f"late {x}"
    return f"on time {x}"


@workflow
def survive_a_frozen_worker(x: int = 1) -> str:
    return stall_first_time(x)
