"""The benchmark's workload, served by a real `conveyor worker bench/flows.py` process.

    bench_chain    a linear chain of CHAIN_LENGTH no-op tasks (each depends on the previous one)
    bench_fanout   a no-op mapped over the run's `items`, then one task that sums the outputs
    bench_small    a linear chain of 3 no-op tasks (many small runs: runs/s, the growth seed)
    bench_one      one no-op task (run start latency)
    bench_w2       W2: a producer of `n` items, a no-op mapped over them, then the sum

The chain is traced once at import, so its length comes from the environment
(`CONVEYOR_BENCH_CHAIN`, set by `bench.foundation` and `bench`; default 50) and the worker that
registers it and the benchmark that reads its spec agree on it.
"""

from __future__ import annotations

import os

from orchestrator import workflow
from workers import task

CHAIN_ENV = "CONVEYOR_BENCH_CHAIN"
CHAIN_LENGTH = int(os.environ.get(CHAIN_ENV, "50"))
SMALL_LENGTH = 3


@task
def noop(x: int) -> int:
    return x + 1


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def produce(n: int) -> list[int]:
    return list(range(n))


@workflow
def bench_chain(start: int = 0) -> int:
    value = start
    for _ in range(CHAIN_LENGTH):
        value = noop(value)
    return value


@workflow
def bench_fanout(items: list[int]) -> int:
    return total(noop.map(items))


@workflow
def bench_small(start: int = 0) -> int:
    value = start
    for _ in range(SMALL_LENGTH):
        value = noop(value)
    return value


@workflow
def bench_one(start: int = 0) -> int:
    return noop(start)


@workflow
def bench_w2(n: int) -> int:
    return total(noop.map(produce(n)))
