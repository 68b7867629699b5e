"""The orchestrator's OpenTelemetry spans, recorded from the transitions it commits.

    conveyor.run <workflow>            created -> finished; a root, or a child of the caller's span
      conveyor.attempt <node>#<n>      dispatched -> finished (the worker's task span is its child)
        conveyor.apply <event>         the orchestrator applying an event of that attempt
      conveyor.apply <event>           ... or of the run (requested, cancel, retry)

A run and an attempt last longer than any process may live (a retry backoff, a sleep, a
restart), so their spans are not held open: each is recorded once it ended, with the times the
run's state holds, and with the span id every process derives the same way (`events.tracing`),
so that the worker's span, exported by another process, finds its parent. An apply span lasts
from the batch's clock to its commit. Recording is a loop over what the batch changed, done only
when tracing is on (`Engine(tracing=...)`): off, the engine pays one `is None`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from events.bus import Bus
from events.models import WireModel
from events.otel import ChosenIds, configured, parent_context, tracer_provider
from events.tracing import child_traceparent, span_id, trace_id
from orchestrator.core.state import NodeState, RunState, Transition
from orchestrator.core.statuses import RUN_TERMINAL, NodeStatus, RunStatus
from orchestrator.errors import UnknownWorkflow
from orchestrator.runtime.registry import Registry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger("conveyor.otel")
SERVICE = "conveyor-orchestrator"
_NS = 1_000_000_000
_FAILED = {NodeStatus.FAILED, RunStatus.FAILED}


def _ns(seconds: float) -> int:
    return int(seconds * _NS)


class RunTracing:
    def __init__(self, provider: TracerProvider, ids: ChosenIds, registry: Registry) -> None:
        self.provider = provider
        self.ids = ids
        self.registry = registry
        self.tracer = provider.get_tracer("conveyor.orchestrator")

    @classmethod
    def from_environment(cls, registry: Registry) -> RunTracing:
        ids = ChosenIds()
        return cls(tracer_provider(SERVICE, ids), ids, registry)

    def shutdown(self) -> None:
        """Export what is batched, then stop (blocking: call it from a thread)."""
        self.provider.shutdown()

    async def record(
        self,
        transitions: Sequence[tuple[Transition, WireModel | None]],
        times: Sequence[float],
        applied_at: float,
        committed_at: float,
    ) -> None:
        """Spans for a committed batch: each applied event (from `applied_at`, when the batch
        was taken up, to `committed_at`), each attempt and each run that ended in it — found by
        their end time, the time of the event that ended them (`times`, one per transition).
        Never raises: telemetry must not stop the engine."""
        try:
            await self._record(transitions, times, applied_at, committed_at)
        except Exception as exc:
            log.warning("spans not recorded", error=f"{type(exc).__name__}: {exc}")

    async def _record(
        self,
        transitions: Sequence[tuple[Transition, WireModel | None]],
        times: Sequence[float],
        applied_at: float,
        committed_at: float,
    ) -> None:
        for (transition, data), ended_at in zip(transitions, times, strict=True):
            run = transition.run
            if run is None or not run.traceparent:
                continue
            self._apply_span(run, data, applied_at, committed_at)
            for key in sorted(transition.changed):
                node = run.nodes.get(key)
                if node is not None:
                    await self._ended_attempts(run, node, ended_at)
            if run.status in RUN_TERMINAL and run.finished_at == ended_at:
                self._run_span(run)

    # ---- the three kinds of span ------------------------------------------------------------
    def _run_span(self, run: RunState) -> None:
        caller = (run.trigger or {}).get("traceparent")
        parent = parent_context(caller) if isinstance(caller, str) else None
        attributes: dict[str, Any] = {
            "conveyor.run_id": run.run_id,
            "conveyor.workflow": run.workflow,
            "conveyor.workflow.version": run.version,
            "conveyor.run.status": str(run.status),
        }
        if run.trigger:
            attributes["conveyor.trigger.kind"] = str(run.trigger.get("kind"))
        self._span(
            f"conveyor.run {run.workflow}",
            span_id(run.traceparent or ""),
            parent,  # None: the run starts its trace
            run.created_at,
            run.finished_at or run.updated_at,
            attributes,
            run.error if run.status in _FAILED else None,
            trace=trace_id(run.traceparent or ""),
        )

    async def _ended_attempts(self, run: RunState, node: NodeState, ended_at: float) -> None:
        for attempt in node.attempts:
            if attempt.finished_at != ended_at:
                continue  # ended before this batch (recorded then), or not yet
            task = await self._task_of(run, node.node_id)
            attributes: dict[str, Any] = {
                "conveyor.run_id": run.run_id,
                "conveyor.node": node.key,
                "conveyor.attempt": attempt.attempt,
                "conveyor.attempt.status": str(attempt.status),
            }
            if task:
                attributes["conveyor.task"] = task
            if attempt.worker:
                attributes["conveyor.worker"] = attempt.worker
            if attempt.started_at is not None:
                attributes["conveyor.queued_s"] = attempt.started_at - attempt.dispatched_at
            self._span(
                f"conveyor.attempt {node.key}#{attempt.attempt}",
                span_id(_attempt_trace(run, node.key, attempt.attempt)),
                parent_context(run.traceparent),
                attempt.dispatched_at,
                attempt.finished_at,
                attributes,
                attempt.error if attempt.status in _FAILED else None,
            )

    def _apply_span(
        self, run: RunState, data: WireModel | None, applied_at: float, committed_at: float
    ) -> None:
        kind = type(data).__name__ if data is not None else "event"
        node, attempt = getattr(data, "node_id", None), getattr(data, "attempt", None)
        parent = run.traceparent
        attributes: dict[str, Any] = {"conveyor.run_id": run.run_id, "conveyor.event": kind}
        if isinstance(node, str) and isinstance(attempt, int) and node in run.nodes:
            parent = _attempt_trace(run, node, attempt)
            attributes.update({"conveyor.node": node, "conveyor.attempt": attempt})
        self._span(
            f"conveyor.apply {kind}",
            None,
            parent_context(parent),
            applied_at,
            max(committed_at, applied_at),
            attributes,
            None,
        )

    def _span(
        self,
        name: str,
        chosen: str | None,
        parent: Any,
        start: float,
        end: float,
        attributes: dict[str, Any],
        error: dict[str, Any] | None,
        *,
        trace: str | None = None,
    ) -> None:
        from opentelemetry.context import Context
        from opentelemetry.trace import Status, StatusCode

        # No parent: a root span, given the run's trace id (an empty context, not the current
        # one, which could hold some unrelated span of this process).
        with self.ids.next_span(chosen, trace if parent is None else None):
            span = self.tracer.start_span(
                name,
                context=Context() if parent is None else parent,
                start_time=_ns(start),
                attributes=attributes,
            )
        if error is not None:
            span.set_status(
                Status(StatusCode.ERROR, f"{error.get('type')}: {error.get('message')}")
            )
        span.end(end_time=_ns(end))

    async def _task_of(self, run: RunState, node_id: str) -> str | None:
        try:
            spec = await self.registry.get(run.workflow, run.version)
        except UnknownWorkflow:
            return None
        node = spec.nodes.get(node_id)
        return node.spec.task if node is not None else None


def engine_tracing(bus: Bus) -> RunTracing | None:
    """The engine's tracing when an OTLP endpoint is set (events.otel), else None. The caller
    shuts it down (in a thread: it flushes) on its way out."""
    if not configured():
        return None
    return RunTracing.from_environment(Registry(bus))


def _attempt_trace(run: RunState, node_key: str, attempt: int) -> str:
    """The attempt's span, as the dispatch carried it to the worker (core.outbox)."""
    return child_traceparent(run.traceparent or "", node_key, str(attempt))
