"""Failure tests with real processes: kill -9 a worker, the orchestrator, and a poison task."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from events.testing import eventually
from tests.integration import flows
from tests.integration.harness import Harness, executions


async def _file(path: Path, what: str, harness: Harness, timeout: float = 30) -> None:
    async def exists() -> bool:
        return path.exists()

    try:
        await eventually(exists, timeout=timeout, message=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{harness.logs()}") from None


async def test_killed_worker_mid_task_is_replaced_and_the_completion_applied_once(
    harness: Harness,
) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.survive_worker_crash)
    victim = harness.spawn_worker()
    run_id = await harness.client.trigger("survive_worker_crash", {"x": 4})
    await _file(harness.workdir / "victim.started", "the task to start on the victim", harness)
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait)

    harness.spawn_worker()  # the replacement gets the task once its ack wait lapses
    final = await harness.client.wait(run_id, timeout=60)
    assert final["status"] == "succeeded", harness.logs()
    assert final["output"] == 40
    node = final["nodes"]["die_first_time"]
    assert node["attempts"] == 1  # a redelivery of the same attempt, not a retry
    assert [a["status"] for a in node["attempt_history"]] == ["succeeded"]
    assert executions(harness.workdir) == ["die_first_time:1", "die_first_time:2"]
    assert harness.engine is not None
    # Every event of the run in the stream applied exactly once: the request, the completion,
    # and the first delivery's task.started if it got out before the kill (a start is sent
    # 0.1 s into a task; the victim may die sooner).
    events = await harness.client.bus.stream_messages(harness.topology.events_stream)
    inputs = [
        m for m in events if m.subject.endswith(run_id) and ".run.succeeded." not in m.subject
    ]
    assert harness.engine.metrics.events["applied"] == len(inputs) in (2, 3)


async def test_killed_orchestrator_resumes_and_reruns_no_committed_node(harness: Harness) -> None:
    await harness.register(flows.three_steps)
    (harness.workdir / "b.wait").touch()  # node b blocks until the test removes this file
    harness.spawn_worker()
    orchestrator = harness.spawn_orchestrator()
    run_id = await harness.client.trigger("three_steps", {})
    await _file(harness.workdir / "b.started", "node b to start", harness)

    orchestrator.send_signal(signal.SIGKILL)
    await asyncio.to_thread(orchestrator.wait)
    (harness.workdir / "b.wait").unlink()  # b completes while no orchestrator runs
    harness.spawn_orchestrator()

    final = await harness.client.wait(run_id, timeout=60)
    assert final["status"] == "succeeded", harness.logs()
    assert final["output"] == ["a", "b", "c"]
    assert sorted(executions(harness.workdir)) == ["a", "b", "c"]  # each node ran exactly once
    assert all(n["attempts"] == 1 for n in final["nodes"].values())


async def test_task_that_kills_every_worker_ends_as_a_failed_attempt(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.kills_its_worker)
    run_id = await harness.client.trigger("kills_its_worker", {"x": 1})
    limit = harness.topology.task_max_deliveries

    async def finished() -> dict[str, object] | None:
        status = await harness.client.status(run_id)
        return status if status and status["status"] in ("failed", "succeeded") else None

    # A supervisor's job, done by the test: restart the worker each time the task kills it.
    final, deaths = None, 0
    for _ in range(limit + 2):
        worker = harness.spawn_worker()
        while worker.poll() is None and final is None:
            final = await finished()
            await asyncio.sleep(0.1)
        if final is not None:
            break
        deaths += 1
    final = final or await eventually(finished, timeout=30, message="the run to end")
    assert final["status"] == "failed", harness.logs()
    error = final["error"]
    assert error["type"] == "WorkerLost"
    # Its first delivery killed the worker; from the second on it ran alone in a child process,
    # which it killed each time, and the worker lived on to say so.
    assert deaths == 1, harness.logs()
    assert error["message"] == (
        f"task 'poison' killed its worker {limit - 1} times when run alone (from its 2nd "
        "delivery on it ran in a process of its own; the last one ended: killed by SIGKILL "
        f"(the out-of-memory killer, or kill -9?)); giving up on this attempt after {limit} "
        "deliveries"
    )
    assert executions(harness.workdir) == ["poison"] * limit
