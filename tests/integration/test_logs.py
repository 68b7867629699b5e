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
