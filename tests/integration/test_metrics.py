"""/metrics in Prometheus format on the orchestrator and on workers (real HTTP, real scrape)."""

from __future__ import annotations

import asyncio
import socket

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.runtime.health import HealthServer
from tests.integration import flows
from tests.integration.harness import Harness
from tests.integration.test_runs import ALL_TASKS


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
    engine_port, worker_port = _free_port(), _free_port()
    engine = await harness.start_orchestrator(metrics_port=engine_port)
    await harness.start_worker(ALL_TASKS, metrics_port=worker_port)
    await harness.register(flows.retry_then_succeed, flows.non_retryable)

    await harness.run(flows.retry_then_succeed, {"succeed_on": 2})
    await harness.run(flows.non_retryable, {"payload": {}})
    await engine.refresh_gauges()

    seen = await _scrape(engine_port)
    assert seen[("conveyor_runs_total", (("state", "started"),))] == 2
    assert seen[("conveyor_runs_total", (("state", "succeeded"),))] == 1
    assert seen[("conveyor_runs_total", (("state", "failed"),))] == 1
    assert seen[("conveyor_tasks_total", (("event", "retried"),))] == 1
    assert seen[("conveyor_tasks_total", (("event", "failed"),))] == 2
    # 2 requests, 3 results (each short task's start folded into it), 1 retry timer.
    assert seen[("conveyor_events_total", (("outcome", "applied"), ("role", "orchestrator")))] >= 6
    assert seen[("conveyor_transition_seconds_count", ())] >= 6
    assert seen[("conveyor_dispatch_to_start_seconds_count", ())] == 3
    assert seen[("conveyor_queue_depth", (("queue", "default"),))] == 0
    assert seen[("conveyor_dlq_messages", ())] == 0

    work = await _scrape(worker_port)
    assert work[("conveyor_worker_tasks_total", (("outcome", "succeeded"),))] == 1
    assert work[("conveyor_worker_tasks_total", (("outcome", "failed"),))] == 2
    assert work[("conveyor_worker_task_seconds_count", (("task", "flaky"),))] == 2
    assert work[("conveyor_worker_in_flight", ())] == 0


async def test_healthz_answers_for_a_running_process(harness: Harness) -> None:
    port = _free_port()
    await harness.start_orchestrator(metrics_port=port)
    async with httpx.AsyncClient() as client:
        healthy = await client.get(f"http://127.0.0.1:{port}/healthz")
        assert (healthy.status_code, healthy.text) == (200, "ok\n")
        assert (await client.get(f"http://127.0.0.1:{port}/nope")).status_code == 404
        assert (await client.post(f"http://127.0.0.1:{port}/healthz")).status_code == 405


async def test_healthz_turns_503_when_the_process_is_not_healthy() -> None:
    state = {"healthy": True}
    server = HealthServer(CollectorRegistry(), lambda: state["healthy"], port=0)
    await server.start()
    serving = asyncio.create_task(server.run())
    try:
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{server.port}/healthz"
            assert (await client.get(url)).status_code == 200
            state["healthy"] = False  # a component failed, or the process is draining
            answer = await client.get(url)
            assert (answer.status_code, answer.text) == (503, "unhealthy\n")
    finally:
        server.stop()
        await serving
        await server.drain()
