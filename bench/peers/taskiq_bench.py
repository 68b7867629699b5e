"""Driver of the taskiq + taskiq-nats peer (runs in bench/.venv-peers; prints one JSON line).

    bench/.venv-peers/bin/python -m bench.peers.taskiq_bench --url nats://... [sizes]

Distributed, like Conveyor: `taskiq worker bench.peers.taskiq_app:broker` at taskiq's defaults
(2 worker processes under its supervisor) against the benchmark's nats-server; this driver is
the client, in its own process: it starts each workflow as a taskiq-pipelines `Pipeline` and
awaits its result with taskiq's `wait_result`, which polls the result backend (a JetStream KV
bucket, `bench.peers.taskiq_kv`) every 10 ms — the map step's waiter task polls at 10 ms too
(the defaults, 200 ms and 500 ms, would measure the poll).

- W1: `Pipeline(stamped)` + 49 x `.call_next(stamped)`; each task appends its (started,
  finished) to the value it passes on: hop = started(i+1) - finished(i), worker clocks.
- W2: `Pipeline(produce).map(noop).call_next(total)`.
- W3: 200 `Pipeline(noop).call_next(noop).call_next(noop)` kicked at once, results awaited in
  order.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from taskiq_pipelines import Pipeline  # type: ignore[import-not-found, unused-ignore]

from bench import stats
from bench.peers.common import RESULT_TIMEOUT_S, check_alive, parser, start_pool, stop_pool
from bench.peers.taskiq_app import broker, noop, produce, stamped, total

POLL_S = 0.01
READY_TIMEOUT_S = 60.0


async def result_of(pipe: Any, *args: Any) -> tuple[Any, float]:
    """Kick a pipeline, await its result; (value, time.time() when it was received)."""
    task = await pipe.kiq(*args)
    result = await task.wait_result(check_interval=POLL_S, timeout=RESULT_TIMEOUT_S)
    result.raise_for_error()
    return result.return_value, time.time()


def chain(length: int) -> Any:
    pipe = Pipeline(broker, stamped)
    for _ in range(length - 1):
        pipe = pipe.call_next(stamped)
    return pipe


async def w1(length: int, runs: int) -> dict[str, Any]:
    pipe = chain(length)
    await result_of(pipe, {"value": 0, "stamps": []})  # warm-up
    walls: list[float] = []
    hops: list[float] = []
    for _ in range(runs):
        begin = time.time()
        value, end = await result_of(pipe, {"value": 0, "stamps": []})
        hops += stats.stamped_hops(value, length)
        walls.append(end - begin)
    return stats.w1_summary(
        length,
        walls,
        hops,
        "taskiq-pipelines Pipeline of call_next steps; result polled every 10 ms; hop from "
        "the tasks' own (started, finished) stamps",
    )


async def w2(items: int, runs: int) -> dict[str, Any]:
    pipe = Pipeline(broker, produce).map(noop, check_interval=POLL_S).call_next(total)
    await result_of(pipe, min(items, 100))  # warm-up
    walls: list[float] = []
    for _ in range(runs):
        begin = time.time()
        value, end = await result_of(pipe, items)
        if value != items * (items + 1) // 2:
            raise RuntimeError(f"W2 returned {value}, expected {items * (items + 1) // 2}")
        walls.append(end - begin)
    return stats.w2_summary(
        items,
        walls,
        "Pipeline(produce).map(noop).call_next(total); map waiter and result polled every 10 ms",
    )


async def w3(runs: int, repeats: int) -> dict[str, Any]:
    pipe = Pipeline(broker, noop).call_next(noop).call_next(noop)
    batches: list[stats.Batch] = []
    for _ in range(repeats + 1):  # the first is a warm-up
        begin = time.time()
        tasks = await asyncio.gather(*(pipe.kiq(0) for _ in range(runs)))
        ends = []
        for task in tasks:
            result = await task.wait_result(check_interval=POLL_S, timeout=RESULT_TIMEOUT_S)
            result.raise_for_error()
            if result.return_value != 3:
                raise RuntimeError(f"W3 run returned {result.return_value}, expected 3")
            ends.append(time.time())
        batches.append((begin, ends))
    return stats.w3_summary(
        runs,
        batches[1:],
        f"{runs} x Pipeline(noop).call_next(noop).call_next(noop) kicked at once, results "
        "awaited in order (polled every 10 ms); latency = kick of the batch -> result received",
    )


async def main_async() -> dict[str, Any]:
    args = parser("taskiq + taskiq-nats on W1/W2/W3").parse_args()
    log = Path(args.log)
    url = os.environ["BENCH_NATS_URL"]
    pool = start_pool(
        [str(Path(sys.executable).with_name("taskiq")), "worker", "bench.peers.taskiq_app:broker"],
        log,
        {**os.environ, "BENCH_NATS_URL": url},
    )
    out: dict[str, Any] = {
        "version": f"taskiq {importlib.metadata.version('taskiq')}, taskiq-nats "
        f"{importlib.metadata.version('taskiq-nats')}, taskiq-pipelines "
        f"{importlib.metadata.version('taskiq-pipelines')}",
        "layout": "distributed: this client process + `taskiq worker` at its defaults (2 worker "
        "processes + a supervisor), PullBasedJetStreamBroker defaults, a JetStream-KV result "
        "backend (bench.peers.taskiq_kv; the shipped object-store one fails W2/W3), results "
        "polled every 10 ms",
        "label": "taskiq + taskiq-nats (JetStream-KV results, 10 ms poll)",
    }
    await broker.startup()
    try:
        ready = Pipeline(broker, noop)
        try:
            await asyncio.wait_for(result_of(ready, 0), READY_TIMEOUT_S)
        except TimeoutError:
            check_alive(pool, log, "taskiq worker")
            raise TimeoutError(f"taskiq workers did not answer within {READY_TIMEOUT_S}s") from None
        out["w1"] = await w1(args.w1_chain, args.w1_runs)
        out["w2"] = await w2(args.w2_items, args.w2_runs)
        out["w3"] = await w3(args.w3_runs, args.w3_repeats)
        check_alive(pool, log, "taskiq worker")
    finally:
        await broker.shutdown()
        stop_pool(pool)
    return out


def main() -> None:
    print(json.dumps(asyncio.run(main_async())), flush=True)


if __name__ == "__main__":
    main()
