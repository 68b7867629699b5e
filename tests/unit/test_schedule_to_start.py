"""A node's schedule-to-start timeout, from the DSL to the machine; task names as subject tokens.

An attempt no worker starts within `schedule_to_start_s` fails with ScheduleToStartTimeout
(retryable: the retry policy decides), by a durable timer that a start cancels.
"""

from __future__ import annotations

import pytest

from events.models import TASK_CANCEL_REQUESTED
from orchestrator import workflow
from orchestrator.core.machine import NODE_RULES, NodeEvent, advance
from orchestrator.core.statuses import NodeStatus, RunStatus
from orchestrator.errors import SpecError
from tests.unit.machine_support import (
    NOW,
    cancel,
    cancelled_timers,
    completed,
    dispatched_keys,
    emits,
    failed,
    fired,
    run_of,
    spec_of,
    start,
    started,
    timers,
)
from workers import TaskDefinitionError, task


def waiting_spec(max_attempts: int = 1) -> object:
    retry = {"max_attempts": max_attempts, "backoff_s": 1.0}
    return spec_of(
        [{"id": "a", "task": "t", "queue": "gpu", "schedule_to_start_s": 5, "retry": retry}]
    )


def test_a_dispatch_with_a_schedule_to_start_timeout_sets_a_start_timer() -> None:
    spec = spec_of([{"id": "a", "task": "t", "schedule_to_start_s": 5}])
    out = start(spec)
    [timer] = timers(out)
    assert (timer.kind, timer.node_key, timer.attempt, timer.due_at) == ("start", "a", 1, NOW + 5)
    assert timer.timer_id == "timer:run-1:a:1:start"


def test_no_timeout_no_timer() -> None:
    assert timers(start(spec_of([{"id": "a", "task": "t"}]))) == []


def test_a_start_in_time_cancels_the_timer_and_a_late_firing_changes_nothing() -> None:
    spec = waiting_spec()
    run = run_of(start(spec))
    [timer] = timers(start(spec))
    out = advance(spec, run, started("a"), NOW + 1)
    assert cancelled_timers(out) == ["timer:run-1:a:1:start"]
    late = advance(spec, run, fired(timer), NOW + 5)
    assert not late.applied
    assert run.nodes["a"].status == NodeStatus.RUNNING


def test_a_result_with_no_start_cancels_the_timer_too() -> None:
    spec = waiting_spec()
    run = run_of(start(spec))
    out = advance(spec, run, completed("a", 1), NOW + 1)
    assert cancelled_timers(out) == ["timer:run-1:a:1:start"]
    assert run.status == RunStatus.SUCCEEDED


def test_not_started_in_time_fails_the_attempt_clearly_and_cancels_it() -> None:
    spec = waiting_spec()
    run = run_of(start(spec))
    [timer] = timers(start(spec))

    out = advance(spec, run, fired(timer), NOW + 5)

    assert run.status == RunStatus.FAILED
    error = run.error
    assert error is not None
    assert (error["type"], error["retryable"], error["node_id"]) == (
        "ScheduleToStartTimeout",
        True,
        "a",
    )
    assert error["message"] == (
        "attempt 1 of node 'a' was not started by any worker within its 5s schedule-to-start "
        "timeout (task 't', queue 'gpu'): is a worker serving it running, and does it have room?"
    )
    # A worker that takes it now must drop it: the attempt is over.
    [cancel_request] = emits(out, TASK_CANCEL_REQUESTED)
    assert cancel_request.data.attempt == 1  # type: ignore[attr-defined]


def test_not_started_in_time_follows_the_retry_policy() -> None:
    spec = waiting_spec(max_attempts=2)
    run = run_of(start(spec))
    [timer] = timers(start(spec))

    out = advance(spec, run, fired(timer), NOW + 5)
    assert run.nodes["a"].status == NodeStatus.RETRYING
    [retry] = timers(out, "retry")

    again = advance(spec, run, fired(retry), NOW + 7)
    assert dispatched_keys(again) == ["a"]
    [second] = timers(again, "start")
    assert (second.attempt, second.due_at) == (2, NOW + 7 + 5)  # each attempt waits afresh

    advance(spec, run, fired(second), NOW + 12)
    assert run.status == RunStatus.FAILED
    assert [a.error["type"] for a in run.nodes["a"].attempts if a.error] == [
        "ScheduleToStartTimeout",
        "ScheduleToStartTimeout",
    ]


def test_a_late_result_of_the_timed_out_attempt_is_stale() -> None:
    spec = waiting_spec(max_attempts=2)
    run = run_of(start(spec))
    [timer] = timers(start(spec))
    advance(spec, run, fired(timer), NOW + 5)
    assert not advance(spec, run, started("a"), NOW + 6).applied
    assert not advance(spec, run, failed("a"), NOW + 6).applied
    assert run.nodes["a"].status == NodeStatus.RETRYING


def test_cancelling_the_run_cancels_the_start_timer() -> None:
    spec = waiting_spec()
    run = run_of(start(spec))
    out = advance(spec, run, cancel(), NOW + 1)
    assert "timer:run-1:a:1:start" in cancelled_timers(out)


def test_the_start_timer_has_a_rule_for_every_status() -> None:
    assert set(NODE_RULES[NodeEvent.START_DUE]) == set(NodeStatus)


# ---- the spec and the DSL ------------------------------------------------------------------


def test_schedule_to_start_applies_to_task_nodes_only() -> None:
    with pytest.raises(SpecError, match="node 'nap': schedule_to_start_s applies to task nodes"):
        spec_of([{"id": "nap", "sleep": {"seconds": 1}, "schedule_to_start_s": 5}])
    with pytest.raises(SpecError, match="greater than 0"):
        spec_of([{"id": "a", "task": "t", "schedule_to_start_s": 0}])


@pytest.mark.parametrize("name", ["etl.load", "a b", "caf\u00e9", "x" * 129, "a>"])
def test_a_task_name_that_is_not_a_subject_token_is_refused_at_registration(name: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_of([{"id": "a", "task": name}, {"id": "b", "task": "ok", "queue": "q.x"}])
    # Every problem is listed, each with its node.
    assert caught.value.problems == [
        f"node 'a': task name {name!r} must hold only letters, digits, '_' or '-' (at most "
        "128): it is a NATS subject token",
        "node 'b': queue 'q.x' must hold only letters, digits, '_', '-'",
    ]


@pytest.mark.parametrize("name", ["etl.load", "größe", "a b"])
def test_task_refuses_a_name_that_is_not_a_subject_token(name: str) -> None:
    with pytest.raises(TaskDefinitionError, match=f"task name '{name}' must hold only ASCII"):
        task(name=name)(lambda: None)


def test_the_task_option_lands_in_the_node_spec() -> None:
    @task(schedule_to_start=30, retries=1)
    def fetch(url: str) -> str:
        return url

    @workflow
    def crawl(url: str) -> str:
        return fetch(url)

    [node] = crawl.spec.nodes
    assert node.schedule_to_start_s == 30
    assert node.retry.max_attempts == 2
    faster = fetch.with_options(schedule_to_start=2)

    @workflow
    def crawl_fast(url: str) -> str:
        return faster(url)

    assert crawl_fast.spec.nodes[0].schedule_to_start_s == 2
