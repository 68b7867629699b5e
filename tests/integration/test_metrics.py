"""/metrics in Prometheus format on the orchestrator and on workers (real HTTP, real scrape)."""

from __future__ import annotations

import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.runtime.metrics import engine_registry, serve_metrics
from tests.integration import flows
from tests.integration.harness import Harness
from tests.integration.test_runs import ALL_TASKS
from workers.metrics import worker_registry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_orchestrator_and_worker_metrics(harness: Harness) -> None:
    engine = await harness.start_orchestrator()
    worker = await harness.start_worker(ALL_TASKS)
    await harness.register(flows.retry_then_succeed, flows.non_retryable)
    engine_port, worker_port = _free_port(), _free_port()
    serve_metrics(engine_registry(engine), engine_port)
    serve_metrics(worker_registry(worker), worker_port)

    await harness.run(flows.retry_then_succeed, {"succeed_on": 2})
    await harness.run(flows.non_retryable, {"payload": {}})
    await engine.refresh_gauges()

    seen = await _scrape(engine_port)
    assert seen[("conveyor_runs_total", (("state", "started"),))] == 2
    assert seen[("conveyor_runs_total", (("state", "succeeded"),))] == 1
    assert seen[("conveyor_runs_total", (("state", "failed"),))] == 1
    assert seen[("conveyor_tasks_total", (("event", "retried"),))] == 1
    assert seen[("conveyor_tasks_total", (("event", "failed"),))] == 2
    assert seen[("conveyor_events_total", (("outcome", "applied"), ("role", "orchestrator")))] >= 7
    assert seen[("conveyor_transition_seconds_count", ())] >= 7
    assert seen[("conveyor_dispatch_to_start_seconds_count", ())] == 3
    assert seen[("conveyor_queue_depth", (("queue", "default"),))] == 0
    assert seen[("conveyor_dlq_messages", ())] == 0

    work = await _scrape(worker_port)
    assert work[("conveyor_worker_tasks_total", (("outcome", "succeeded"),))] == 1
    assert work[("conveyor_worker_tasks_total", (("outcome", "failed"),))] == 2
    assert work[("conveyor_worker_task_seconds_count", (("task", "flaky"),))] == 2
    assert work[("conveyor_worker_in_flight", ())] == 0
