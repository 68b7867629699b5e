"""Prometheus metrics of the orchestrator (and of a projection), documented in
docs/operations.md.

The engine keeps plain counters and histograms and this module exposes them through its own
`CollectorRegistry` (never the process-global one: several engines may live in one process,
e.g. `conveyor dev` or the tests). `runtime/health.py` serves it on `/metrics`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from events.models import (
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_SUCCEEDED,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TimerFired,
    WireModel,
)
from orchestrator.core.commands import Dispatch, Emit
from orchestrator.core.state import NodeState, Transition

if TYPE_CHECKING:
    from orchestrator.runtime.engine import Engine

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_RUN_OUTCOMES = {RUN_SUCCEEDED: "succeeded", RUN_FAILED: "failed", RUN_CANCELLED: "cancelled"}


class EngineMetrics:
    """What the engine observes; read by the collector at scrape time."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()  # applied, duplicate, stale, malformed, parked
        self.runs: Counter[str] = Counter()  # started, succeeded, failed, cancelled
        self.tasks: Counter[str] = Counter()  # dispatched, retried, started, succeeded, failed
        self.outbox_published = 0
        self.queue_depth: dict[str, int] = {}
        self.dlq_messages = 0
        self.transition_seconds = Histogram(
            "conveyor_transition_seconds",
            "Time to apply one event and commit it (per event, measured per batch)",
            buckets=_LATENCY_BUCKETS,
            registry=None,
        )
        self.dispatch_to_start_seconds = Histogram(
            "conveyor_dispatch_to_start_seconds",
            "From a task's dispatch to a worker starting it",
            buckets=_LATENCY_BUCKETS,
            registry=None,
        )

    def observe(self, transition: Transition, data: WireModel | None) -> None:
        """Count what one applied transition did."""
        if transition.created:
            self.runs["started"] += 1
        for command in transition.commands:
            if isinstance(command, Dispatch):
                self.tasks["dispatched"] += 1
                if command.attempt > 1:
                    self.tasks["retried"] += 1
            elif isinstance(command, Emit) and command.event_type in _RUN_OUTCOMES:
                self.runs[_RUN_OUTCOMES[command.event_type]] += 1
        if isinstance(data, TaskCompleted | TaskFailed):
            self.tasks["succeeded" if isinstance(data, TaskCompleted) else "failed"] += 1
            if data.ran_s is not None and transition.run is not None:
                # A short task's start came folded into its result: it started all the same.
                self.tasks["started"] += 1
                self._observe_start(transition.run.nodes.get(data.node_id))
        elif isinstance(data, TimerFired) and data.kind == "deadline":
            self.tasks["timed_out"] += 1
        elif isinstance(data, TaskStarted) and transition.run is not None:
            self.tasks["started"] += 1
            self._observe_start(transition.run.nodes.get(data.node_id))

    def _observe_start(self, node: NodeState | None) -> None:
        if node is None or not node.attempts:
            return
        attempt = node.attempts[-1]
        if attempt.started_at is not None:
            self.dispatch_to_start_seconds.observe(
                max(0.0, attempt.started_at - attempt.dispatched_at)
            )


class _EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        m = self.engine.metrics
        role = "projection" if self.engine.projection else "orchestrator"
        events = CounterMetricFamily(
            "conveyor_events", "Events handled, by outcome", labels=["role", "outcome"]
        )
        for outcome, count in sorted(m.events.items()):
            events.add_metric([role, outcome], count)
        yield events
        runs = CounterMetricFamily("conveyor_runs", "Runs by state reached", labels=["state"])
        for state, count in sorted(m.runs.items()):
            runs.add_metric([state], count)
        yield runs
        tasks = CounterMetricFamily("conveyor_tasks", "Task attempts by event", labels=["event"])
        for event, count in sorted(m.tasks.items()):
            tasks.add_metric([event], count)
        yield tasks
        yield CounterMetricFamily(
            "conveyor_outbox_published", "Outbox rows published", value=m.outbox_published
        )
        depth = GaugeMetricFamily(
            "conveyor_queue_depth", "Tasks waiting or in flight, per queue", labels=["queue"]
        )
        for queue, value in sorted(m.queue_depth.items()):
            depth.add_metric([queue], value)
        yield depth
        yield GaugeMetricFamily(
            "conveyor_dlq_messages", "Messages parked on the DLQ", value=m.dlq_messages
        )
        yield GaugeMetricFamily(
            "conveyor_cached_runs", "Hot runs held in memory", value=self.engine.cached_runs
        )
        yield GaugeMetricFamily(
            "conveyor_pending_timers",
            "Durable timers not yet due",
            value=self.engine.pending_timers,
        )
        yield from m.transition_seconds.collect()
        yield from m.dispatch_to_start_seconds.collect()


def engine_registry(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_EngineCollector(engine))
    return registry


class OwnershipMetrics:
    """What a lease-mode replica observes about its partitions (see runtime.ownership)."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()  # taken_over, handed_over, lost
        self.snapshots = 0
        self.snapshot_seconds = 0.0  # the last one's
        self.snapshot_bytes = 0
        self.restores = 0
        self.restore_seconds = 0.0
        self.restore_bytes = 0

    def snapshot_taken(self, seconds: float, size: int) -> None:
        self.snapshots += 1
        self.snapshot_seconds, self.snapshot_bytes = seconds, size

    def restored(self, seconds: float, size: int) -> None:
        self.restores += 1
        self.restore_seconds, self.restore_bytes = seconds, size


class _OwnershipCollector(Collector):
    """The replica's own figures, and its partitions' engines' figures summed (a partition
    handed over takes its counts with it: these are per process, like every counter)."""

    def __init__(self, metrics: OwnershipMetrics, engines: Callable[[], list[Engine]]) -> None:
        self.metrics = metrics
        self.engines = engines

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        engines = self.engines()
        yield GaugeMetricFamily(
            "conveyor_partitions_owned", "Partitions this replica serves", value=len(engines)
        )
        changes = CounterMetricFamily(
            "conveyor_partition_changes", "Partitions taken over, handed over, lost", labels=["how"]
        )
        for how, count in sorted(m.events.items()):
            changes.add_metric([how], count)
        yield changes
        yield CounterMetricFamily("conveyor_snapshots", "Snapshots uploaded", value=m.snapshots)
        yield GaugeMetricFamily(
            "conveyor_snapshot_seconds", "The last snapshot's duration", value=m.snapshot_seconds
        )
        yield GaugeMetricFamily(
            "conveyor_snapshot_bytes",
            "The last snapshot's size (compressed)",
            value=m.snapshot_bytes,
        )
        yield CounterMetricFamily("conveyor_restores", "Snapshots restored", value=m.restores)
        yield GaugeMetricFamily(
            "conveyor_restore_seconds", "The last restore's duration", value=m.restore_seconds
        )
        yield from _summed(_EngineCollector(engine).collect() for engine in engines)


def _summed(families: Iterable[Iterator[Metric]]) -> Iterator[Metric]:
    """Metric families of several engines, their samples with equal labels added up."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for collected in families:
        for family in collected:
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values[family.name][key] = values[family.name].get(key, 0.0) + sample.value
    for name, metric in merged.items():
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
        yield metric


def ownership_registry(
    metrics: OwnershipMetrics, engines: Callable[[], list[Engine]]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_OwnershipCollector(metrics, engines))
    return registry
