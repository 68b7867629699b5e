"""OpenTelemetry export: a real `conveyor orchestrator` and `conveyor worker` with the standard
OTEL_EXPORTER_OTLP_ENDPOINT set send their spans over OTLP/HTTP to a receiver in this test, which
decodes them with the official protobuf definitions (opentelemetry-proto); the span tree of one
run — caller -> run -> attempts -> the worker's task spans, and the orchestrator's applies — is
checked id by id."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from events.otel import configured
from events.testing import eventually
from events.tracing import child_traceparent, span_id
from orchestrator import UnknownWorkflow
from tests.integration.harness import Harness

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    status: int
    attributes: dict[str, Any]
    events: list[str]


class Receiver:
    """An OTLP/HTTP endpoint: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces" and "protobuf" in self.headers["Content-Type"]
                if ok:
                    receiver.take(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    found.append(
                        Span(
                            service=str(resource.get("service.name")),
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent=s.parent_span_id.hex(),
                            status=s.status.code,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            events=[e.name for e in s.events],
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(found)

    def named(self, prefix: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.name.startswith(prefix)]


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    got = Receiver()
    got.thread.start()
    # Only the processes this test spawns see these (their environment is copied from ours).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", got.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    try:
        yield got
    finally:
        got.server.shutdown()
        got.server.server_close()


def test_configured_by_the_standard_variables() -> None:
    assert not configured({})
    assert configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not configured({**on, "OTEL_SDK_DISABLED": "true"})
    assert not configured({**on, "OTEL_TRACES_EXPORTER": "none"})


def test_a_worker_asks_once_whether_anyone_configured_opentelemetry() -> None:
    """`attempt_tracer()` (called when a worker starts): None in a process where nobody set a
    tracer provider, so the worker runs its attempts without a span and without asking again
    per task; the application's own provider once it set one (an embedded worker)."""
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from workers.otel import attempt_tracer
        assert attempt_tracer() is None, "no provider: no tracer"
        trace.set_tracer_provider(TracerProvider())
        assert attempt_tracer() is not None, "the application's provider"
        print("checked")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "checked"), done.stderr


def orchestrator_in(mode: str, harness: Harness) -> subprocess.Popen[bytes]:
    """A static orchestrator (its own store), or a lease-mode replica: the same tracer serves
    every partition it takes over, so the span tree must not depend on the mode."""
    if mode == "static":
        return harness.spawn_orchestrator()
    state_dir = str(harness.workdir / "lease-state")
    return harness.spawn("orchestrator", "--lease", "--state-dir", state_dir)


@pytest.mark.parametrize("mode", ["static", "lease"])
async def test_one_runs_span_tree_reaches_an_otlp_receiver(
    harness: Harness, receiver: Receiver, mode: str
) -> None:
    orchestrator = orchestrator_in(mode, harness)
    worker = harness.spawn_worker()

    async def registered() -> bool:
        try:
            await harness.client.registry.get("retry_then_succeed")
        except UnknownWorkflow:
            return False
        return True

    await eventually(registered, timeout=60, message=f"the worker to register\n{harness.logs()}")
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    run_id = await harness.client.trigger(
        "retry_then_succeed", {"succeed_on": 2}, traceparent=caller
    )
    final = await harness.client.wait(run_id, timeout=60)
    assert final["status"] == "succeeded"
    run_span = span_id(final["traceparent"])
    attempt_spans = {
        n: span_id(child_traceparent(final["traceparent"], "flaky", str(n))) for n in (1, 2)
    }

    async def exported() -> bool:
        return bool(receiver.named("conveyor.run")) and len(receiver.named("conveyor.task")) == 2

    await eventually(exported, timeout=30, message=f"the run's spans\n{harness.logs()}")
    everything = receiver.named("")
    assert {s.trace_id for s in everything} == {CALLER_TRACE}, "one trace: the caller's"

    (run,) = receiver.named("conveyor.run")
    assert run.name == "conveyor.run retry_then_succeed"
    assert (run.span_id, run.parent) == (run_span, CALLER_SPAN)
    assert run.service == "conveyor-orchestrator"
    assert run.attributes["conveyor.run_id"] == run_id
    assert run.attributes["conveyor.run.status"] == "succeeded"
    assert run.attributes["conveyor.trigger.kind"] == "client"

    attempts = {s.attributes["conveyor.attempt"]: s for s in receiver.named("conveyor.attempt")}
    assert sorted(attempts) == [1, 2]
    for n, attempt in attempts.items():
        assert attempt.name == f"conveyor.attempt flaky#{n}"
        assert (attempt.span_id, attempt.parent) == (attempt_spans[n], run_span)
        assert attempt.attributes["conveyor.task"] == "flaky"
    assert attempts[1].status == Status.STATUS_CODE_ERROR
    assert attempts[2].status != Status.STATUS_CODE_ERROR

    tasks = {s.attributes["conveyor.attempt"]: s for s in receiver.named("conveyor.task")}
    for n, task in tasks.items():
        assert task.name == "conveyor.task flaky"
        assert task.parent == attempt_spans[n], "the worker's span is a child of its attempt's"
        assert task.service == "conveyor-worker"
    assert tasks[1].status == Status.STATUS_CODE_ERROR and tasks[1].events == ["exception"]
    assert tasks[2].events == []

    applies = receiver.named("conveyor.apply")
    by_event = {(s.attributes["conveyor.event"], s.parent) for s in applies}
    assert ("RunRequested", run_span) in by_event
    assert ("TaskFailed", attempt_spans[1]) in by_event
    assert ("TaskCompleted", attempt_spans[2]) in by_event
    assert {s.parent for s in applies} <= {run_span, *attempt_spans.values()}
    assert len({s.span_id for s in everything}) == len(everything), "no span id twice"

    for proc in (orchestrator, worker):
        proc.terminate()
        assert proc.wait(timeout=30) == 0
