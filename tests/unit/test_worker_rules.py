"""The pure parts of routing, heartbeats and crash containment: how a death is described, where
a child process finds a task, when a worker counts as live, what a waiting node says, and the
shared/alone gate of the in-process fallback."""

from __future__ import annotations

import asyncio
import signal

import pytest
from pydantic import ValidationError

from events.bus import Delivery
from events.models import TaskDispatched, WorkerHeartbeat
from orchestrator.core.status import no_worker_note
from orchestrator.runtime.workers import LIVENESS_BEATS, _stored_at, is_live
from tests.integration import flows
from workers import task
from workers.attempt import died_alone, refusal
from workers.isolation import Died, Solo, TaskAddress, address_of

DISPATCHED = TaskDispatched(run_id="r1", node_id="n", attempt=1, task="crash", queue="default")


@pytest.mark.parametrize(
    ("returncode", "described"),
    [
        (-signal.SIGKILL, "killed by SIGKILL (the out-of-memory killer, or kill -9?)"),
        (-signal.SIGSEGV, "killed by SIGSEGV (a crash in native code?)"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (3, "exit status 3, without a result"),
        (0, "exit status 0, without a result"),
    ],
)
def test_a_death_says_how_the_process_ended(returncode: int, described: str) -> None:
    assert Died(returncode).describe() == described


def test_worker_lost_messages_count_the_deaths_alone_and_the_deliveries() -> None:
    alone = died_alone(DISPATCHED, 5, "exit status 3, without a result")
    assert (alone.type, alone.retryable) == ("WorkerLost", True)
    assert alone.message == (
        "task 'crash' killed its worker 4 times when run alone (from its 2nd delivery on it ran "
        "in a process of its own; the last one ended: exit status 3, without a result); giving "
        "up on this attempt after 5 deliveries"
    )
    refused = refusal(DISPATCHED, 6, 5, {}, "w1")
    assert refused is not None and refused.type == "WorkerLost"
    assert refused.message.startswith("task 'crash' was delivered 5 times and every worker")
    assert "even though it ran alone from its 2nd delivery on" in refused.message
    assert refusal(DISPATCHED, 5, 5, {"crash": flows.poison}, "w1") is None


def test_a_child_process_finds_a_module_level_task_by_its_address() -> None:
    address = address_of(flows.poison)
    assert address == TaskAddress("tests.integration.flows", flows.__file__, "poison")
    # A copy with other options is the same function: found under the original's name.
    assert address_of(flows.poison.with_options(retries=3)) == address


def test_a_task_made_inside_a_function_has_no_address() -> None:
    @task
    def local(x: int) -> int:
        return x

    assert address_of(local) is None


def _beat(**changes: object) -> WorkerHeartbeat:
    fields: dict[str, object] = {
        "worker": "w1",
        "host": "h",
        "version": "test",
        "serves": [{"queue": "default", "task": "t"}],
        "concurrency": 4,
        "in_flight": 1,
        "started_at": "2030-01-01T00:00:00Z",
        "interval_s": 5.0,
    }
    return WorkerHeartbeat.model_validate({**fields, **changes})


def test_a_worker_is_live_while_running_and_heard_from_recently() -> None:
    beat = _beat()
    limit = LIVENESS_BEATS * beat.interval_s
    assert is_live(beat, 100.0, 100.0 + limit)
    assert not is_live(beat, 100.0, 100.0 + limit + 0.01)
    assert not is_live(_beat(state="stopped"), 100.0, 100.0)
    assert not is_live(_beat(state="draining"), 100.0, 100.0)


@pytest.mark.parametrize(
    "bad",
    [{"interval_s": 0}, {"in_flight": -1}, {"state": "sleeping"}, {"serves": [{"queue": "q"}]}],
)
def test_a_heartbeat_with_a_bad_field_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _beat(**bad)


def test_the_server_timestamp_of_a_heartbeat_is_read_to_the_microsecond() -> None:
    stamped = Delivery("s", {"Nats-Time-Stamp": "2030-01-01T00:00:01.123456789Z"}, b"", 1, 1, None)
    assert _stored_at(stamped, 0.0) == pytest.approx(1893456001.123456)
    assert _stored_at(Delivery("s", {}, b"", 1, 1, None), 7.0) == 7.0
    assert _stored_at(Delivery("s", {"Nats-Time-Stamp": "soon"}, b"", 1, 1, None), 7.0) == 7.0


def test_a_waiting_node_says_which_task_and_queue_and_for_how_long() -> None:
    assert no_worker_note("gpu", "train", 41.6) == {
        "queue": "gpu",
        "task": "train",
        "seconds": 42,
        "message": "no worker has served task 'train' (queue 'gpu') for 42 s: start a worker "
        "that serves it",
    }


async def _shared(
    solo: Solo, events: list[str], name: str, gate: asyncio.Event | None = None
) -> None:
    async with solo.shared():
        events.append(f"{name} in")
        if gate is not None:
            await gate.wait()
        events.append(f"{name} out")


async def _alone(solo: Solo, events: list[str]) -> None:
    async with solo.alone():
        events.append("alone in")
        await asyncio.sleep(0)
        events.append("alone out")


async def _a_suspect_between_two_shared(
    events: list[str],
) -> tuple[asyncio.Event, asyncio.Task[None], asyncio.Task[None], asyncio.Task[None]]:
    """A shared attempt running (until the event is set), a suspect waiting to run alone, and a
    shared attempt that came after it."""
    solo = Solo()
    release_first = asyncio.Event()
    first = asyncio.create_task(_shared(solo, events, "first", release_first))
    await asyncio.sleep(0)
    lonely = asyncio.create_task(_alone(solo, events))
    await asyncio.sleep(0)
    late = asyncio.create_task(_shared(solo, events, "late"))
    await asyncio.sleep(0.01)
    return release_first, first, lonely, late


async def test_alone_waits_for_the_shared_ones_and_holds_off_new_ones() -> None:
    events: list[str] = []
    release_first, first, lonely, late = await _a_suspect_between_two_shared(events)
    assert events == ["first in"]  # the suspect waits; the late one waits behind it
    release_first.set()
    await asyncio.gather(first, lonely, late)
    assert events == ["first in", "first out", "alone in", "alone out", "late in", "late out"]


async def test_a_suspect_cancelled_while_waiting_to_run_alone_lets_the_held_ones_go() -> None:
    events: list[str] = []
    release_first, first, lonely, late = await _a_suspect_between_two_shared(events)
    assert events == ["first in"]  # the late one waits behind the suspect
    lonely.cancel()  # handed back (shutdown) before it ever ran
    await asyncio.wait_for(late, 5)  # not held back by a suspect that is gone
    assert events == ["first in", "late in", "late out"]
    release_first.set()
    await asyncio.wait_for(first, 5)
    assert lonely.cancelled() and events[-1] == "first out"
