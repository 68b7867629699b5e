"""Each task goes only to workers that serve it; a task no running worker serves waits, says so,
and (with a schedule-to-start timeout) fails clearly; what was dispatched before the upgrade is
forwarded. Against a real nats-server, with real `conveyor worker` processes where it matters.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from events import Topology
from events.codec import decode
from events.models import TaskDispatched
from events.testing import eventually, unique_namespace
from orchestrator.runtime.queries import Queries
from orchestrator.runtime.workers import WorkerInfo, read_workers
from tests.api.support import serving
from tests.integration import routing_flows as flows
from tests.integration.harness import Harness, executions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ROUTING_FLOWS = str(Path(flows.__file__))


@pytest.fixture
def topology() -> Topology:
    # Heartbeats twice a second: a worker counts as gone 1.5 s after it falls silent.
    return Topology(
        namespace=unique_namespace(),
        task_ack_wait_s=2.0,
        task_max_deliveries=3,
        worker_heartbeat_s=0.5,
    )


async def _live_workers(harness: Harness, count: int) -> list[WorkerInfo]:
    async def probe() -> list[WorkerInfo]:
        live = [w for w in await read_workers(harness.client.bus) if w.live]
        return live if len(live) >= count else []

    try:
        return await eventually(probe, timeout=30, message=f"{count} live worker(s)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{harness.logs()}") from None


async def _wait(harness: Harness, run_id: str, timeout: float = 60) -> dict[str, Any]:
    try:
        return await harness.client.wait(run_id, timeout=timeout)
    except TimeoutError:
        status = await harness.client.status(run_id)
        raise AssertionError(f"run {run_id} not over: {status}\n{harness.logs()}") from None


def _attempt_workers(status: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: [a["worker"] for a in node["attempt_history"]]
        for name, node in status["nodes"].items()
        if not node.get("children")
    }


# ---- routing ---------------------------------------------------------------------------------


async def test_two_pools_of_different_modules_on_the_default_queue_each_run_their_own(
    harness: Harness,
) -> None:
    await harness.start_orchestrator()
    ml = harness.spawn_worker(str(EXAMPLES / "ml_pipeline.py"))
    hello = harness.spawn_worker(str(EXAMPLES / "hello.py"))
    workers = await _live_workers(harness, 2)
    pool_of = {w.name: w.heartbeat.pid for w in workers}
    assert set(pool_of.values()) == {ml.pid, hello.pid}
    served = {w.heartbeat.pid: {s.task for s in w.heartbeat.serves} for w in workers}
    assert served[hello.pid] == {"greet", "shout"}
    assert served[ml.pid] == {"extract", "transform", "train", "pick_best", "evaluate"}

    async def registered() -> bool:
        names = await harness.client.registry.names()
        return {"ml_pipeline", "hello"} <= set(names)

    await eventually(registered, message="both workers to register their workflows")
    small = {"rows": 200, "epochs": 5, "candidates": [{"l2": 0.0, "learning_rate": 0.1}] * 3}
    run_ids = [await harness.client.trigger("ml_pipeline", small) for _ in range(3)]
    run_ids += [await harness.client.trigger("hello", {"name": f"n{i}"}) for i in range(3)]
    finals = [await _wait(harness, run_id) for run_id in run_ids]

    assert [f["status"] for f in finals] == ["succeeded"] * 6, harness.logs()
    assert [f["output"] for f in finals[3:]] == [f"HELLO, N{i}!" for i in range(3)]
    assert harness.engine is not None
    queries = Queries(harness.engine.store)
    for final in finals:
        expected = ml.pid if final["workflow"] == "ml_pipeline" else hello.pid
        ran_on = _attempt_workers(final)
        if final["workflow"] == "ml_pipeline":  # a mapped node: its children hold the attempts
            children, _ = await queries.children(final["run_id"], "train", after=-1, limit=100)
            ran_on["train"] = [a.worker or "" for c in children for a in c.attempts]
        for node, names in ran_on.items():
            # One attempt each (no UnknownTask, no retry), on a worker of the pool that serves it.
            assert len(names) == (3 if node == "train" else 1), (node, names)
            assert {pool_of[name] for name in names} == {expected}, (final["workflow"], node)


async def test_pools_with_overlapping_tasks_work_side_by_side(harness: Harness) -> None:
    await harness.start_orchestrator()
    pool_a = await harness.start_worker(flows.POOL_A, concurrency=2)
    pool_b = await harness.start_worker(flows.POOL_B, concurrency=2)
    assert pool_a.serves == [("default", "only_a"), ("default", "shared")]
    await harness.register(flows.overlapping)

    runs = [await harness.client.trigger("overlapping", {"x": x}) for x in range(10)]
    finals = [await _wait(harness, run_id) for run_id in runs]

    assert [f["output"] for f in finals] == [[x + 1, x * 2, x - 3] for x in range(10)]
    assert all(n["attempts"] == 1 for f in finals for n in f["nodes"].values())
    where: dict[str, Counter[str]] = {}
    for line in executions(harness.workdir):
        task, worker, delivery = line.split(":")
        assert delivery == "1"
        where.setdefault(task, Counter())[worker] += 1
    assert set(where["only_a"]) == {pool_a.name}
    assert set(where["only_b"]) == {pool_b.name}
    assert set(where["shared"]) <= {pool_a.name, pool_b.name}
    assert sum(where["shared"].values()) == 10


# ---- a task no running worker serves ---------------------------------------------------------


async def test_a_task_no_worker_serves_waits_and_status_says_so(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.start_worker([flows.shared])  # a live worker, but not one that serves `orphan`
    await harness.register(flows.waits_for_a_worker)
    run_id = await harness.client.trigger("waits_for_a_worker", {"x": 5})

    async def noted() -> dict[str, Any] | None:
        status = await harness.client.status(run_id)
        node = (status or {}).get("nodes", {}).get("orphan", {})
        return node.get("no_worker") and node["no_worker"]["seconds"] >= 1 and node

    node = await eventually(noted, timeout=15, message="the status to say no worker serves it")
    assert node["status"] == "dispatched"
    note = node["no_worker"]
    assert (note["queue"], note["task"]) == ("nobody", "orphan")
    assert note["message"] == (
        f"no worker has served task 'orphan' (queue 'nobody') for {note['seconds']} s: "
        "start a worker that serves it"
    )

    # The CLI and the HTTP API say the same.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "orchestrator.cli", "status", run_id],
        env=harness.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "no worker has served task 'orphan' (queue 'nobody') for" in done.stdout
    async with serving(harness) as api:
        detail = await api.run(run_id)
    assert detail is not None
    assert detail["nodes"]["orphan"]["no_worker"]["task"] == "orphan"

    # Once a worker that serves it comes, it runs, and the note is gone.
    await harness.start_worker([flows.orphan])
    final = await _wait(harness, run_id, timeout=30)
    assert final["status"] == "succeeded" and final["output"] == 5
    assert "no_worker" not in final["nodes"]["orphan"]


async def test_a_killed_worker_stops_counting_within_a_few_heartbeats(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.waits_for_a_worker)
    worker = harness.spawn_worker(ROUTING_FLOWS, "--queue", "nobody")
    [info] = await _live_workers(harness, 1)
    assert info.serves("nobody", "orphan")
    worker.send_signal(signal.SIGKILL)
    await asyncio.to_thread(worker.wait)
    run_id = await harness.client.trigger("waits_for_a_worker", {"x": 1})

    async def noted() -> bool:
        status = await harness.client.status(run_id)
        return bool(status and status["nodes"]["orphan"].get("no_worker"))

    # LIVENESS_BEATS (3) missed heartbeats of 0.5 s, plus the status API's 1 s cache.
    await eventually(noted, timeout=6, message="the dead worker to stop counting")
    [gone] = [w for w in await read_workers(harness.client.bus) if w.heartbeat.pid == worker.pid]
    assert not gone.live and gone.heartbeat.state == "running"  # it never said goodbye
    # The status API lists the workers too, as the dashboard and the CLI read them.
    reply = json.loads(
        await harness.client.bus.request(harness.topology.api_subject("workers"), b"{}")
    )
    assert reply["ok"] is True
    [listed] = [w for w in reply["workers"] if w["pid"] == worker.pid]
    assert listed["live"] is False
    assert {"queue": "nobody", "task": "orphan"} in listed["serves"]


async def test_a_stopped_worker_says_so_in_its_last_heartbeat(harness: Harness) -> None:
    worker = harness.spawn_worker(ROUTING_FLOWS)
    [info] = await _live_workers(harness, 1)
    assert info.heartbeat.version.startswith("conveyor-python ")
    assert info.heartbeat.concurrency == 16 and info.heartbeat.in_flight == 0
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    [last] = await read_workers(harness.client.bus)
    assert (last.heartbeat.state, last.live) == ("stopped", False)


async def test_schedule_to_start_fails_each_attempt_clearly_and_retries(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.gives_up_waiting)
    final = await harness.run(flows.gives_up_waiting, {"x": 1}, timeout=30)
    assert final["status"] == "failed"
    node = final["nodes"]["impatient"]
    assert node["attempts"] == 2  # retries=1: the policy applies
    assert [a["error"]["type"] for a in node["attempt_history"]] == ["ScheduleToStartTimeout"] * 2
    assert all(a["started_at"] is None for a in node["attempt_history"])
    error = final["error"]
    assert (error["type"], error["retryable"], error["node_id"]) == (
        "ScheduleToStartTimeout",
        True,
        "impatient",
    )
    assert error["message"] == (
        "attempt 2 of node 'impatient' was not started by any worker within its 1s "
        "schedule-to-start timeout (task 'impatient', queue 'nobody'): is a worker serving it "
        "running, and does it have room?"
    )


async def test_an_attempt_started_in_time_is_not_failed_by_its_timer(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.start_worker([flows.prompt])
    await harness.register(flows.starts_in_time)
    final = await harness.run(flows.starts_in_time, {"x": 4})
    assert (final["status"], final["output"]) == ("succeeded", 4)


# ---- the upgrade from per-queue dispatch -------------------------------------------------------


async def test_a_task_dispatched_on_the_old_queue_subject_is_forwarded_and_runs(
    harness: Harness,
) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.waits_for_a_worker)
    bus, topology = harness.client.bus, harness.topology
    run_id = await harness.client.trigger("waits_for_a_worker", {"x": 7})

    # Make it what a previous version left behind: the dispatch on `<ns>.task.<queue>`.
    async def dispatched() -> list[Any]:
        if await bus.stream_size(topology.tasks_stream) == 0:
            return []
        return await bus.stream_messages(topology.tasks_stream)

    [message] = await eventually(dispatched, message="the dispatch")
    assert message.subject == topology.task_subject("nobody", "orphan")
    assert decode(message.headers, message.data).data_as(TaskDispatched).run_id == run_id
    old_headers = {**message.headers, "Nats-Msg-Id": f"old:{message.headers['Nats-Msg-Id']}"}
    await bus.publish_raw(topology.legacy_task_subject("nobody"), old_headers, message.data)
    await bus.js.delete_msg(topology.tasks_stream, message.stream_seq)

    worker = await harness.start_worker([flows.orphan])
    final = await _wait(harness, run_id, timeout=30)
    assert (final["status"], final["output"]) == ("succeeded", 7)
    assert final["nodes"]["orphan"]["attempts"] == 1
    assert [f.forwarded for f in worker._forwarders] == [1]
    assert await bus.stream_size(topology.tasks_stream) == 0
