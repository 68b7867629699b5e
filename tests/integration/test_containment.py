"""A task that kills its worker process fails alone: the attempts that shared the process with it
finish, and it is failed as WorkerLost only after it killed the process it ran alone in.

Real `conveyor worker` processes on a real nats-server; the test restarts a worker that dies,
as a process supervisor (Kubernetes, systemd) would.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from events import Topology
from events.acks import Outcome
from events.testing import eventually, unique_namespace
from tests.integration import routing_flows as flows
from tests.integration.harness import Harness, executions

ROUTING_FLOWS = str(Path(flows.__file__))


@pytest.fixture
def topology() -> Topology:
    return Topology(
        namespace=unique_namespace(),
        task_ack_wait_s=2.0,
        task_max_deliveries=3,
        worker_heartbeat_s=0.5,
    )


class Supervisor:
    """Keeps one `conveyor worker` running: starts another when it dies, and counts deaths."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.deaths = 0
        self.worker = harness.spawn_worker(ROUTING_FLOWS)
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.to_thread(self.worker.wait)
            self.deaths += 1
            self.worker = self.harness.spawn_worker(ROUTING_FLOWS)

    async def close(self) -> None:
        self._task.cancel()


async def _all_started(harness: Harness) -> None:
    async def started() -> bool:
        return len(list(harness.workdir.glob("bystander*.started"))) == flows.BYSTANDERS

    try:
        await eventually(started, timeout=30, message="every bystander to start")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{harness.logs()}") from None


async def _wait(harness: Harness, run_id: str) -> dict[str, Any]:
    try:
        return await harness.client.wait(run_id, timeout=60)
    except TimeoutError:
        status = await harness.client.status(run_id)
        raise AssertionError(f"run {run_id} not over: {status}\n{harness.logs()}") from None


async def test_a_crasher_in_a_busy_worker_fails_alone(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.busy, flows.crashes)
    supervisor = Supervisor(harness)
    try:
        first_worker = supervisor.worker
        bystanders = [
            await harness.client.trigger("busy", {"n": n}) for n in range(flows.BYSTANDERS)
        ]
        await _all_started(harness)  # every bystander in flight in the one worker process
        crash = await harness.client.trigger("crashes", {})
        finals = [await _wait(harness, run_id) for run_id in bystanders]
        crashed = await _wait(harness, crash)
    finally:
        await supervisor.close()

    # The bystanders finish on their first attempt, all of them.
    for n, final in enumerate(finals):
        assert (final["status"], final["output"]) == ("succeeded", n), harness.logs()
        assert final["nodes"]["bystander"]["attempts"] == 1
    # The crasher took the shared process down once (the first worker, with every bystander);
    # after that it ran alone in a child process, killed it each time, and the worker lived.
    assert first_worker.returncode is not None
    assert supervisor.deaths == 1, harness.logs()
    assert supervisor.worker.poll() is None
    assert crashed["status"] == "failed"
    assert crashed["nodes"]["crasher"]["attempts"] == 1
    error = crashed["error"]
    assert (error["type"], error["retryable"], error["node_id"]) == ("WorkerLost", True, "crasher")
    limit = harness.topology.task_max_deliveries
    assert error["message"] == (
        f"task 'crasher' killed its worker {limit - 1} times when run alone (from its 2nd "
        "delivery on it ran in a process of its own; the last one ended: exit status 3, "
        f"without a result); giving up on this attempt after {limit} deliveries"
    )
    # Where everything ran: the first delivery of each in the first worker, the rest alone.
    runs = [line.rsplit(":", 2) for line in executions(harness.workdir)]
    deliveries = sorted((task, int(delivery)) for task, _, delivery in runs)
    assert deliveries == sorted(
        [(f"bystander{n}", d) for n in range(flows.BYSTANDERS) for d in (1, 2)]
        + [("crasher", d) for d in range(1, limit + 1)]
    )


async def test_a_suspect_a_child_process_cannot_find_runs_alone_in_the_worker(
    harness: Harness,
) -> None:
    """The fallback: a task made inside a function cannot be found by a child process, so it
    runs in the worker's own process with nothing else running there."""
    await harness.start_orchestrator()
    log = harness.workdir / "overlap.log"

    def note(what: str) -> None:
        with open(log, "a") as out:
            out.write(f"{what}\n")

    from workers import current, task

    @task(name="local_slow")
    async def local_slow(x: int) -> int:
        note(f"begin {x} {current().delivery}")
        await asyncio.sleep(0.5)
        note(f"end {x} {current().delivery}")
        return x

    from orchestrator import workflow

    @workflow(name="local_flow")
    def local_flow(x: int) -> int:
        return local_slow(x)

    await harness.register(local_flow)
    suspect = await harness.client.trigger("local_flow", {"x": 0})
    await _hand_back(harness, "default", "local_slow", 1)
    others = [await harness.client.trigger("local_flow", {"x": x}) for x in (1, 2)]
    await harness.start_worker([local_slow], concurrency=4)
    finals = [await _wait(harness, run_id) for run_id in [suspect, *others]]
    assert [f["output"] for f in finals] == [0, 1, 2]

    lines = log.read_text().split("\n")[:-1]
    # The suspect (delivered twice) began and ended with nothing else running in between.
    begin = lines.index("begin 0 2")
    assert lines[begin + 1] == "end 0 2", lines


async def _hand_back(harness: Harness, queue: str, task: str, count: int) -> None:
    """Play a worker that took `count` messages of the task and died: take them, hand them back."""
    puller = await harness.client.bus.task_puller(queue, task)
    held: list[Any] = []

    async def taken() -> bool:
        held.extend(await puller.fetch(count - len(held), timeout=0.5))
        return len(held) == count

    await eventually(taken, message=f"{count} dispatch(es)")
    for delivery in held:
        await delivery.settle(Outcome.SHUTDOWN)
    await puller.close()


async def test_a_suspect_in_a_child_process_keeps_its_context_logs_and_timeout(
    harness: Harness,
) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.talks)
    talking = await harness.client.trigger("talks", {"x": 1})
    sleeping = await harness.client.trigger("talks", {"x": -1})
    await _hand_back(harness, "default", "chatty", 2)
    worker = await harness.start_worker([flows.chatty])

    final = await _wait(harness, talking)
    assert final["status"] == "succeeded"
    child_pid = final["output"]
    assert child_pid != os.getpid()  # not in the (in-process) worker: in a child of its own
    topology = harness.topology
    lines = await harness.client.bus.read_stream(
        topology.logs_stream, topology.log_subject(talking, "chatty")
    )
    messages = [json.loads(line.data)["message"] for line in lines]
    assert f"printed on delivery 2 by {worker.name}" in messages
    assert f"logged in pid {child_pid}" in messages

    slow = await _wait(harness, sleeping)
    error = slow["error"]
    assert (slow["status"], error["type"], error["retryable"]) == ("failed", "TimeoutError", True)
    assert "did not finish within its 2.0s timeout" in error["message"]
    assert slow["finished_at"] - slow["created_at"] < 20  # not the 60 s the task slept for
