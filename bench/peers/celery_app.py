"""The Celery 5 + Redis peer's tasks, served by `celery -A bench.peers.celery_app worker`.

Runs in bench/.venv-peers (Celery is not a Conveyor dependency). Redis (`BENCH_REDIS_URL`, a
redis-server the suite starts) is both the broker and the result backend; every setting is
Celery's default. The tasks are `bench.peers.tasks`' plain functions, as taskiq's are.

W2's producer cannot know its fan-out before it runs, so `fan_out` does what Celery's docs
recommend for a map over a task's output: it replaces itself with a chord of one `noop` per
item and `total` as the body, which inherits its task id (the client's `AsyncResult` of the
whole chain resolves to the reduce's result).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, chord  # type: ignore[import-not-found, unused-ignore]

from bench.peers import tasks

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("tqbench", broker=URL, backend=URL)


# Registered under their own module's names (bench.peers.tasks.noop, ...).
noop = app.task(tasks.noop)
stamped = app.task(tasks.stamped)
produce = app.task(tasks.produce)
total = app.task(tasks.total)


@app.task(bind=True)  # type: ignore[untyped-decorator, unused-ignore]
def fan_out(self: Any, items: list[int]) -> Any:
    return self.replace(chord((noop.s(x) for x in items), total.s()))
