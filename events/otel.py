"""OpenTelemetry export, shared by the orchestrator and the workers: on when the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, off otherwise.

The export goes through the official SDK (`pip install 'conveyor[otel]'`): a `TracerProvider`
with a batching span processor and the OTLP exporter, which reads every other standard variable
itself (`OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION`, `_CERTIFICATE`,
`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`, ...). The
protocol is OTLP over HTTP with protobuf (`http/protobuf`, the default); `grpc` works when
`opentelemetry-exporter-otlp-proto-grpc` is installed too. `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` turns it off.

Nothing here runs at import: a process calls `tracer_provider()` once, from its composition
root, and shuts the provider down (flushing what is batched) on its way out. The span ids are
Conveyor's own (`events.tracing`), chosen through `ChosenIds`, so that the orchestrator's spans
and the workers' meet in one tree whichever process exports them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from events.errors import ConveyorError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTALL = "pip install 'conveyor[otel]'"


class OtelError(ConveyorError):
    """OpenTelemetry is asked for (an OTLP endpoint is set) but cannot work as configured."""


def configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process should export traces: an OTLP endpoint is set and nothing turns
    the SDK or the traces exporter off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINTS)


def tracer_provider(service: str, ids: Any | None = None) -> TracerProvider:
    """A provider exporting over OTLP, for `service` (unless `OTEL_SERVICE_NAME` or
    `OTEL_RESOURCE_ATTRIBUTES` names the service). OtelError when the SDK is missing or the
    protocol is one it cannot speak."""
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise OtelError(
            f"{_endpoint_variable()} is set, but the OpenTelemetry SDK is not installed: "
            f"{INSTALL} (or unset it)"
        ) from None
    detected = Resource.create()
    name = str(detected.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=detected, id_generator=ids)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    return provider


def _exporter() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    try:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            return GrpcExporter()
    except ImportError as exc:
        raise OtelError(
            f"OTLP over {protocol} needs {exc.name or 'its exporter'}: {INSTALL}"
            + (
                " and pip install opentelemetry-exporter-otlp-proto-grpc"
                if protocol == "grpc"
                else ""
            )
        ) from None
    raise OtelError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: Conveyor exports with http/protobuf (the "
        "default) or grpc"
    )


def _endpoint_variable() -> str:
    return next((n for n in ENDPOINTS if os.environ.get(n, "").strip()), ENDPOINTS[-1])


def parent_context(traceparent: str | None) -> Context | None:
    """The span `traceparent` names, as the parent of spans to start (None when invalid)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    from opentelemetry import trace

    span = trace.get_current_span(context)
    return context if span.get_span_context().is_valid else None


class ChosenIds:
    """An id generator (the SDK's extension point) that hands out the span id a caller chose
    for the next span, and random ids otherwise: Conveyor's span ids are derived from the run
    (events.tracing) so that every process agrees on them."""

    def __init__(self) -> None:
        self._span: int | None = None
        self._trace: int | None = None
        self._random = random.SystemRandom()

    @contextmanager
    def next_span(self, span_id: str | None, trace_id: str | None = None) -> Iterator[None]:
        """The span started inside gets `span_id` (16 hex digits) and, when it starts a trace
        (no parent), `trace_id` (32 hex digits)."""
        self._span = int(span_id, 16) if span_id else None
        self._trace = int(trace_id, 16) if trace_id else None
        try:
            yield
        finally:
            self._span = self._trace = None

    def generate_span_id(self) -> int:
        chosen, self._span = self._span, None
        return chosen if chosen is not None else self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        chosen, self._trace = self._trace, None
        return chosen if chosen is not None else self._random.getrandbits(128) or 1

    def is_trace_id_random(self) -> bool:
        return True
