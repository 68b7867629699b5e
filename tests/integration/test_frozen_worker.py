"""SIGSTOP a worker mid-task (a frozen VM, a stopped container, a long GC pause): the task goes
to another worker once its ack wait lapses, the run succeeds on that result, and the frozen
worker's late result for the same attempt, when it wakes, changes nothing."""

from __future__ import annotations

import asyncio
import signal

from events.models import TASK_COMPLETED
from events.testing import eventually
from tests.integration import stall_flows
from tests.integration.harness import Harness, executions

STALL_FLOWS = stall_flows.__file__


async def test_a_frozen_workers_task_is_taken_over_and_its_late_result_changes_nothing(
    harness: Harness,
) -> None:
    await harness.start_orchestrator()
    await harness.register(stall_flows.survive_a_frozen_worker)
    frozen = harness.spawn_worker(STALL_FLOWS)
    run_id = await harness.client.trigger("survive_a_frozen_worker", {"x": 7})

    async def started() -> bool:
        return (harness.workdir / "stalled.started").exists()

    await eventually(started, timeout=30, message=f"the task to start\n{harness.logs()}")
    frozen.send_signal(signal.SIGSTOP)
    try:
        harness.spawn_worker(STALL_FLOWS)  # takes the task once the frozen one's ack wait lapses
        final = await harness.client.wait(run_id, timeout=60)
        assert final["status"] == "succeeded", harness.logs()
        assert final["output"] == "on time 7"
        node = final["nodes"]["stall_first_time"]
        assert node["attempts"] == 1, "a redelivery of the same attempt, not a retry"
    finally:
        (harness.workdir / "stalled.release").touch()
        frozen.send_signal(signal.SIGCONT)

    # The frozen worker wakes, finishes its copy and reports it: a second task.completed for
    # attempt 1, from another worker, lands in the event stream and is applied as a no-op.
    bus = harness.client.bus
    completions = harness.topology.event_subject(TASK_COMPLETED, run_id)

    async def late_result_published() -> bool:
        found = await bus.stream_messages(harness.topology.events_stream, completions)
        return len(found) == 2

    await eventually(
        late_result_published, timeout=60, message=f"the late result\n{harness.logs()}"
    )
    consumer = harness.topology.orchestrator_consumer(harness.topology.partition(run_id))

    async def applied() -> bool:
        return await bus.pending(harness.topology.events_stream, consumer) == 0

    await eventually(applied, timeout=30, message="the orchestrator to take the late result")
    after = await harness.client.status(run_id)
    assert after is not None
    assert (after["status"], after["output"]) == ("succeeded", "on time 7")
    assert after["nodes"]["stall_first_time"]["attempts"] == 1
    assert sorted(executions(harness.workdir)) == [
        "stall_first_time:1",
        "stall_first_time:2",
        "stall_first_time:late-finish",
    ]
    assert frozen.poll() is None, "the woken worker goes on serving"
    frozen.terminate()
    assert await asyncio.to_thread(frozen.wait, 30) == 0, harness.logs()
