"""Prometheus metrics of a worker, on its own registry (see docs/operations.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from workers.runtime import Worker

TASK_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)


def task_seconds_histogram() -> Histogram:
    return Histogram(
        "conveyor_worker_task_seconds",
        "Time a task attempt ran on this worker",
        labelnames=["task"],
        buckets=TASK_SECONDS_BUCKETS,
        registry=None,
    )


class _WorkerCollector(Collector):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self.worker
        tasks = CounterMetricFamily(
            "conveyor_worker_tasks", "Task attempts finished here, by outcome", labels=["outcome"]
        )
        tasks.add_metric(["succeeded"], w.completed)
        tasks.add_metric(["failed"], w.failed)
        yield tasks
        yield GaugeMetricFamily("conveyor_worker_in_flight", "Tasks running now", value=w.in_flight)
        yield GaugeMetricFamily(
            "conveyor_worker_concurrency", "Tasks this worker runs at most", value=w.concurrency
        )
        yield CounterMetricFamily(
            "conveyor_worker_log_lines_dropped",
            "Task log lines dropped because the publish queue was full",
            value=w.log_lines_dropped,
        )
        yield from w.task_seconds.collect()


def worker_registry(worker: Worker) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_WorkerCollector(worker))
    return registry
