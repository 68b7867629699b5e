"""The taskiq + taskiq-nats peer's tasks, served by `taskiq worker bench.peers.taskiq_app:broker`.

Runs in bench/.venv-peers (taskiq is not a Conveyor dependency). The broker is taskiq-nats's
PullBasedJetStreamBroker with its defaults (a durable pull consumer on a JetStream stream), on
the benchmark's nats-server (`BENCH_NATS_URL`). Tasks report their timings on a core-NATS
subject (`tqbench.timing`), which the driver (`bench.peers.taskiq_bench`) subscribes to.

taskiq has no orchestrator: a chain is choreographed by its tasks, each one kicking the next
one as its last step (a hop is one JetStream publish + one fetch, not a round trip through a
coordinator as in Conveyor).
"""

from __future__ import annotations

import json
import os
import time

from taskiq_nats import PullBasedJetStreamBroker  # type: ignore[import-not-found, unused-ignore]

URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
TIMING = "tqbench.timing"
DONE = "tqbench.done"

broker = PullBasedJetStreamBroker(
    servers=URL, subject="tqbench.tasks", stream_name="TQBENCH", durable="tqbench"
)


@broker.task  # type: ignore[untyped-decorator, unused-ignore]
async def chain_step(run: str, i: int, n: int, prev_done: float) -> int:
    """Step i of n of a chain: a no-op, its timing published, then it kicks step i+1."""
    started = time.time()
    value = i + 1
    done = time.time()
    report = {"run": run, "i": i, "n": n, "started": started, "prev_done": prev_done, "done": done}
    await broker.client.publish(TIMING, json.dumps(report).encode())
    if value < n:
        await chain_step.kiq(run, value, n, time.time())
    return value


@broker.task  # type: ignore[untyped-decorator, unused-ignore]
async def counted_noop(x: int) -> int:
    """A no-op that says it ran (the driver counts completions)."""
    await broker.client.publish(DONE, b"")
    return x + 1
