"""Driver of the Celery 5 + Redis peer (runs in bench/.venv-peers; prints one JSON line).

    BENCH_REDIS_URL=redis://... bench/.venv-peers/bin/python -m bench.peers.celery_bench [sizes]

Distributed, like Conveyor: a redis-server (started by `bench.peers.run`) is broker and result
backend; `celery -A bench.peers.celery_app worker --pool prefork --concurrency 2` (a main process
and 2 forked pool processes; Celery's default pool, and its default concurrency on this 2-core
machine) serves the tasks; this driver is the client, in its own process, and awaits every
result through the Redis result backend (`AsyncResult.get`, which subscribes to the result).

- W1: `chain(stamped.s(...), stamped.s() x 49)`; each task appends its (started, finished) to
  the value it passes on: hop = started(i+1) - finished(i), worker clocks.
- W2: `chain(produce.s(n), fan_out.s())`, `fan_out` replacing itself with
  `chord(noop.s(x) for x in items)(total.s())`.
- W3: 200 `chain(noop.s(0), noop.s(), noop.s())` sent at once, results awaited in order.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import chain  # type: ignore[import-not-found, unused-ignore]

from bench import stats
from bench.peers.celery_app import app, fan_out, noop, produce, stamped
from bench.peers.common import RESULT_TIMEOUT_S, check_alive, parser, start_pool, stop_pool

WORKERS = 2
READY_TIMEOUT_S = 60.0


def result_of(signature: Any) -> tuple[Any, float]:
    value = signature.apply_async().get(timeout=RESULT_TIMEOUT_S)
    return value, time.time()


def stamped_chain(length: int) -> Any:
    # A new signature per run: one that was sent is frozen with its task ids, and sending it
    # again would await the earlier run's result.
    start = {"value": 0, "stamps": []}
    return chain(stamped.s(start), *(stamped.s() for _ in range(length - 1)))


def w1(length: int, runs: int) -> dict[str, Any]:
    result_of(stamped_chain(length))  # warm-up
    walls: list[float] = []
    hops: list[float] = []
    for _ in range(runs):
        begin = time.time()
        value, end = result_of(stamped_chain(length))
        hops += stats.stamped_hops(value, length)
        walls.append(end - begin)
    return stats.w1_summary(
        length,
        walls,
        hops,
        "a Celery chain; result awaited through the Redis backend; hop from the tasks' own "
        "(started, finished) stamps",
    )


def w2(items: int, runs: int) -> dict[str, Any]:
    result_of(chain(produce.s(min(items, 100)), fan_out.s()))  # warm-up
    walls: list[float] = []
    for _ in range(runs):
        begin = time.time()
        value, end = result_of(chain(produce.s(items), fan_out.s()))
        if value != items * (items + 1) // 2:
            raise RuntimeError(f"W2 returned {value}, expected {items * (items + 1) // 2}")
        walls.append(end - begin)
    return stats.w2_summary(
        items, walls, "chain(produce, fan_out), fan_out replaced by chord(noop x n, total)"
    )


def w3(runs: int, repeats: int) -> dict[str, Any]:
    batches: list[stats.Batch] = []
    for _ in range(repeats + 1):  # the first is a warm-up
        begin = time.time()
        pending = [chain(noop.s(0), noop.s(), noop.s()).apply_async() for _ in range(runs)]
        ends = []
        for result in pending:
            if result.get(timeout=RESULT_TIMEOUT_S) != 3:
                raise RuntimeError("W3 run did not return 3")
            ends.append(time.time())
        batches.append((begin, ends))
    return stats.w3_summary(
        runs,
        batches[1:],
        f"{runs} x chain(noop, noop, noop) sent at once, results awaited in order; latency = "
        "start of the batch -> result received",
    )


def main() -> None:
    args = parser("Celery 5 + Redis on W1/W2/W3").parse_args()
    log = Path(args.log)
    pool = start_pool(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "bench.peers.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(WORKERS),
            "--loglevel",
            "WARNING",
        ],
        log,
        dict(os.environ),
    )
    out: dict[str, Any] = {
        "version": f"celery {importlib.metadata.version('celery')}, kombu "
        f"{importlib.metadata.version('kombu')}, redis-py {importlib.metadata.version('redis')}",
        "layout": f"distributed: this client process + redis-server (broker and result "
        f"backend) + `celery worker --pool prefork --concurrency {WORKERS}` (a main process and "
        f"{WORKERS} pool processes), Celery's default settings",
        "label": f"Celery 5 + Redis (prefork {WORKERS})",
    }
    try:
        try:
            noop.delay(0).get(timeout=READY_TIMEOUT_S)
        except Exception:
            check_alive(pool, log, "celery worker")
            raise
        out["w1"] = w1(args.w1_chain, args.w1_runs)
        out["w2"] = w2(args.w2_items, args.w2_runs)
        out["w3"] = w3(args.w3_runs, args.w3_repeats)
        check_alive(pool, log, "celery worker")
    finally:
        stop_pool(pool)
        app.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
