"""The worker's OpenTelemetry span of each attempt it runs: a child of the attempt's span that the
dispatch carried (`traceparent`, see events.tracing), current while the task runs, so that spans
the task's own code starts (with any OpenTelemetry instrumentation) nest under it.

    tracer = attempt_tracer()        # once, when the worker starts
    result = await traced(tracer, trace, dispatched, worker_name, perform(...))

It uses the process's global tracer provider: `conveyor worker` installs one exporting over OTLP
when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`install_tracing`, from the composition root), and a
worker embedded in an application that configured OpenTelemetry itself uses that one. With
neither, or without the SDK installed, `attempt_tracer()` is None and the worker awaits the
attempt bare: asking OpenTelemetry per task whether a provider is set costs ~8% of a no-op
task's CPU (its lookup reads `os.environ` each time), so the worker asks once, when it starts —
an application configures OpenTelemetry before it starts its worker. Either way the attempt's
`traceparent` goes on in the worker's events (workers.reporting): the trace stays whole.
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


def attempt_tracer() -> Any | None:
    """The tracer of the attempts' spans, or None when nobody configured OpenTelemetry in this
    process (or its API is not installed)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None  # nobody configured OpenTelemetry in this process
    return trace.get_tracer("conveyor.worker")


async def traced(
    tracer: Any, trace: str | None, dispatched: TaskDispatched, worker: str, attempt: Awaitable[R]
) -> R:
    """Await `attempt` (a `Result`, or whatever ended it in a child process) inside a span of
    it made with `tracer` (from `attempt_tracer()`), when there is a trace to continue."""
    parent = parent_context(trace)
    if parent is None:
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
