"""Task log capture: logging, print and structlog inside a task become LogLines on the bus."""

from __future__ import annotations

import json
import logging

import structlog

from events import LogLine
from events.logs import configure_logging
from events.testing import eventually
from orchestrator import workflow
from tests.integration.harness import Harness
from workers import task
from workers.logcapture import structlog_processor


@task
def chatty(n: int) -> int:
    logging.getLogger("user.code").warning("about to work on %s", n)
    print(f"printed {n}")
    structlog.get_logger("user.struct").warning("structured", n=n)
    return n


@task
async def chatty_async(n: int) -> int:
    logging.getLogger("user.async").info("async line %s", n)
    return n


@workflow
def logs_flow(n: int = 3) -> list[int]:
    return [chatty(n), chatty_async(n)]


async def test_lines_logged_inside_tasks_are_published_with_their_ids(harness: Harness) -> None:
    configure_logging(level="warning", extra_processors=[structlog_processor])
    logging.getLogger("user").setLevel(logging.INFO)
    await harness.start_orchestrator()
    await harness.start_worker([chatty, chatty_async])
    await harness.register(logs_flow)
    final = await harness.run(logs_flow, {"n": 7})
    assert final["status"] == "succeeded"
    run_id, bus, topo = final["run_id"], harness.client.bus, harness.topology

    async def lines() -> list[LogLine] | None:
        messages = await bus.read_stream(topo.logs_stream, f"{topo.namespace}.log.{run_id}.>")
        found = [LogLine.model_validate(json.loads(m.data)) for m in messages]
        return found if len(found) >= 4 else None

    found = await eventually(lines, message="4 log lines")
    by_message = {line.message: line for line in found}
    assert by_message["about to work on 7"].level == "warning"
    assert by_message["about to work on 7"].logger == "user.code"
    assert by_message["printed 7"].logger == "stdout"
    assert by_message["structured n=7"].level == "warning"
    assert by_message["async line 7"].node_id == "chatty_async"
    assert {(line.run_id, line.attempt) for line in found} == {(run_id, 1)}
    assert {line.node_id for line in found} == {"chatty", "chatty_async"}


async def test_trace_context_flows_from_the_trigger_to_every_task_and_log_line(
    harness: Harness,
) -> None:
    from events import decode
    from events.tracing import trace_id

    await harness.start_orchestrator()
    await harness.start_worker([chatty, chatty_async])
    await harness.register(logs_flow)
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    run_id = await harness.client.trigger("logs_flow", {"n": 1}, traceparent=caller)
    final = await harness.client.wait(run_id, timeout=30)
    assert final["status"] == "succeeded"
    # The run is a span of its own in the caller's trace; the trigger keeps the caller's span.
    assert trace_id(final["traceparent"]) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert final["trigger"]["traceparent"] == caller
    bus, topo = harness.client.bus, harness.topology

    events = await bus.read_stream(topo.events_stream, topo.run_events_filter(run_id))
    traces = {decode(m.headers, m.data).extensions.get("traceparent") for m in events}
    assert None not in traces
    assert {trace_id(t) for t in traces if t} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    # Each task attempt is a span of its own inside the caller's trace.
    assert len(traces) >= 3

    async def log_traces() -> set[str | None] | None:
        messages = await bus.read_stream(topo.logs_stream, f"{topo.namespace}.log.{run_id}.>")
        found = {LogLine.model_validate(json.loads(m.data)).traceparent for m in messages}
        return found if len(messages) >= 4 else None

    found = await eventually(log_traces, message="the run's log lines")
    assert {trace_id(t) for t in found if t} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    assert None not in found
