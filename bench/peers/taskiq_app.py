"""The taskiq + taskiq-nats peer's tasks, served by `taskiq worker bench.peers.taskiq_app:broker`.

Runs in bench/.venv-peers (taskiq is not a Conveyor dependency). The broker is taskiq-nats's
`PullBasedJetStreamBroker` with its defaults (a durable pull consumer on a JetStream stream) on
the benchmark's nats-server (`BENCH_NATS_URL`); results go to a JetStream key-value bucket
(`bench.peers.taskiq_kv`, since the shipped object-store backend fails W2/W3); workflows are
taskiq-pipelines' `Pipeline` (its middleware kicks the next step from the worker once a
result is saved; its map step kicks one task per item and a waiter task that polls their
results).

The tasks are `bench.peers.tasks`' plain functions, as Celery's are: taskiq runs them in its
thread pool.
"""

from __future__ import annotations

import os

from taskiq_nats import PullBasedJetStreamBroker  # type: ignore[import-not-found, unused-ignore]
from taskiq_pipelines import PipelineMiddleware  # type: ignore[import-not-found, unused-ignore]

from bench.peers import tasks
from bench.peers.taskiq_kv import JetStreamKVResultBackend

URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")

broker = (
    PullBasedJetStreamBroker(
        servers=URL, subject="tqbench.tasks", stream_name="TQBENCH", durable="tqbench"
    )
    .with_result_backend(JetStreamKVResultBackend(URL))
    .with_middlewares(PipelineMiddleware())
)


# Registered under their own module's names (bench.peers.tasks:noop, ...).
noop = broker.task(tasks.noop)
stamped = broker.task(tasks.stamped)
produce = broker.task(tasks.produce)
total = broker.task(tasks.total)
