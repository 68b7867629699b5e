"""The worker's OpenTelemetry span of each attempt it runs: a child of the attempt's span that the
dispatch carried (`traceparent`, see events.tracing), current while the task runs, so that spans
the task's own code starts (with any OpenTelemetry instrumentation) nest under it.

    result = await traced(trace, dispatched, worker_name, perform(...))

It uses the process's global tracer provider: `conveyor worker` installs one exporting over OTLP
when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`install_tracing`, from the composition root), and a
worker embedded in an application that configured OpenTelemetry itself uses that one. With
neither, or without the SDK installed, `traced` just awaits the attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from events.models import TaskDispatched
from events.otel import configured, parent_context, tracer_provider
from workers.attempt import Result

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

SERVICE = "conveyor-worker"
R = TypeVar("R")


def install_tracing() -> TracerProvider | None:
    """When an OTLP endpoint is set: make an OTLP-exporting provider the process's global one
    (returned: the caller shuts it down on its way out), unless the application set its own
    already (then that one is used). None when there is nothing to shut down."""
    if not configured():
        return None
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    provider = tracer_provider(SERVICE)
    trace.set_tracer_provider(provider)
    return provider


def _tracer() -> Any | None:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None  # nobody configured OpenTelemetry in this process
    return trace.get_tracer("conveyor.worker")


async def traced(
    trace: str | None, dispatched: TaskDispatched, worker: str, attempt: Awaitable[R]
) -> R:
    """Await `attempt` (a `Result`, or whatever ended it in a child process) inside a span of
    it, when there is a tracer and a trace to continue."""
    tracer = _tracer() if trace else None
    parent = parent_context(trace) if tracer is not None else None
    if tracer is None or parent is None:
        return await attempt
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes = {
        "conveyor.run_id": dispatched.run_id,
        "conveyor.node": dispatched.node_id,
        "conveyor.attempt": dispatched.attempt,
        "conveyor.task": dispatched.task,
        "conveyor.queue": dispatched.queue,
        "conveyor.worker": worker,
    }
    with tracer.start_as_current_span(
        f"conveyor.task {dispatched.task}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        result = await attempt
        if isinstance(result, Result) and result.error is not None:
            error = result.error
            span.set_attribute("conveyor.error.retryable", error.retryable)
            span.add_event(
                "exception",
                {
                    "exception.type": error.type,
                    "exception.message": error.message,
                    "exception.stacktrace": error.traceback or "",
                },
            )
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
        return result
