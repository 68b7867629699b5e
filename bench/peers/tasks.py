"""The peers' task bodies, the same for Celery and taskiq (each app registers them).

Plain functions, like Conveyor's `bench/flows.py`: each framework runs them as it runs any
sync task (Celery in its prefork pool, taskiq in its thread pool).
"""

from __future__ import annotations

import time
from typing import Any


def noop(x: int) -> int:
    return x + 1


def stamped(chain: dict[str, Any]) -> dict[str, Any]:
    """W1's no-op: passes on (started, finished) of every task so far (the run's own stamps)."""
    started = time.time()
    value = chain["value"] + 1
    return {"value": value, "stamps": [*chain["stamps"], (started, time.time())]}


def produce(n: int) -> list[int]:
    return list(range(n))


def total(values: list[int]) -> int:
    return sum(values)
