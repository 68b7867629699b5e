"""A result for an attempt the machine has not dispatched yet is kept, and applied when it is.

How it happens: in lease mode a deposed owner's commands to workers are not fenced, so an
attempt it dispatched runs and its result lands in the event stream, while its successor
re-decides the partition from a snapshot and the stream's tail. Were the successor's decisions
to differ (or an event be applied out of stream order: a batch whose commit failed is delivered
again after later ones), the result would come before the event that makes the successor
dispatch that attempt. Dropped as stale, it would be lost: the successor's dispatch then carries
the id the task stream has already seen (deduplicated: nothing runs) and the run waits for ever.
Kept on the node, it is applied the moment the machine dispatches that attempt, as if the
worker had answered at once; the dispatch itself is withdrawn (its task already ran).
"""

from __future__ import annotations

from events.models import LIMIT_RELEASED, LimitGranted
from orchestrator.core.machine import advance
from orchestrator.core.state import NodeState
from orchestrator.core.statuses import NodeStatus, RunStatus
from tests.unit.machine_support import (
    NOW,
    cancel,
    completed,
    dispatched_keys,
    emits,
    failed,
    fired,
    run_of,
    spec_of,
    start,
    timers,
)
from tests.unit.test_flow_machine import TASK_LIMITED, grant, requests

PIPELINE = spec_of(
    [
        {"id": "a", "task": "t", "retry": {"max_attempts": 3, "backoff_s": 1.0}},
        {"id": "b", "task": "t", "depends_on": ["a"]},
    ]
)


def test_a_result_before_its_grants_is_applied_once_the_attempt_is_dispatched() -> None:
    t = start(TASK_LIMITED, {"account": "acc-1"})
    run = run_of(t)
    [slot] = requests(t)
    assert run.nodes["a"].status == NodeStatus.QUEUED

    # The deposed owner was granted both gates and the worker answered; the successor has not
    # applied the grants yet (another order, or another decision).
    t = advance(TASK_LIMITED, run, completed("a", "paid"), NOW + 1)
    assert t.applied, "the result must be kept, not dropped as stale"
    assert run.nodes["a"].status == NodeStatus.QUEUED
    assert run.status == RunStatus.RUNNING

    t = advance(TASK_LIMITED, run, grant(slot), NOW + 2)
    [rate] = requests(t)
    t = advance(TASK_LIMITED, run, grant(rate), NOW + 3)
    assert (run.nodes["a"].status, run.nodes["a"].output) == (NodeStatus.SUCCEEDED, "paid")
    assert run.status == RunStatus.SUCCEEDED
    assert dispatched_keys(t) == [], "the task already ran: its dispatch is withdrawn"
    released = {e.data.request for e in emits(t, LIMIT_RELEASED)}
    assert slot.request in released  # the concurrency slot goes back as the attempt ends
    assert advance(TASK_LIMITED, run, completed("a", "paid"), NOW + 4).applied is False


def test_a_result_for_the_next_attempt_waits_for_the_retry_to_dispatch_it() -> None:
    run = run_of(start(PIPELINE))
    t = advance(PIPELINE, run, failed("a", 1), NOW + 1)
    [retry] = timers(t, "retry")
    assert run.nodes["a"].status == NodeStatus.RETRYING

    assert advance(PIPELINE, run, completed("a", 41, attempt=2), NOW + 2).applied
    assert run.nodes["a"].status == NodeStatus.RETRYING  # nothing happens before its time

    t = advance(PIPELINE, run, fired(retry), NOW + 3)
    a = run.nodes["a"]
    assert (a.status, a.attempt, a.output) == (NodeStatus.SUCCEEDED, 2, 41)
    assert dispatched_keys(t) == ["b"]  # a's own dispatch withdrawn; its dependent goes on


def test_a_failure_kept_early_counts_as_that_attempts_failure() -> None:
    run = run_of(start(PIPELINE))
    advance(PIPELINE, run, completed("b", "early", attempt=1), NOW + 1)  # b not dispatched yet
    advance(PIPELINE, run, failed("b", 1, retryable=False), NOW + 2)  # replaces nothing: kept
    t = advance(PIPELINE, run, completed("a", 1), NOW + 3)
    b = run.nodes["b"]
    # The first result kept for an attempt is the one applied (as a worker's first answer is).
    assert (b.status, b.output) == (NodeStatus.SUCCEEDED, "early")
    assert run.status == RunStatus.SUCCEEDED
    assert dispatched_keys(t) == []


def test_results_of_past_attempts_and_of_ended_runs_stay_stale() -> None:
    run = run_of(start(PIPELINE))
    advance(PIPELINE, run, failed("a", 1), NOW + 1)
    assert advance(PIPELINE, run, failed("a", 1), NOW + 2).applied is False  # a duplicate
    assert advance(PIPELINE, run, completed("a", 1, attempt=1), NOW + 3).applied is False
    cancelled = run_of(start(PIPELINE))
    advance(PIPELINE, cancelled, cancel(), NOW + 1)
    assert advance(PIPELINE, cancelled, completed("b", 1), NOW + 2).applied is False


def test_a_kept_result_survives_the_store() -> None:
    run = run_of(start(PIPELINE))
    advance(PIPELINE, run, completed("b", {"deep": [1, 2]}), NOW + 1)
    stored = NodeState.from_dict(run.nodes["b"].to_dict())
    assert stored == run.nodes["b"]
    assert NodeState.from_dict(run.nodes["a"].to_dict()).to_dict() == run.nodes["a"].to_dict()


def test_a_grant_applied_after_a_kept_result_of_another_node_changes_only_its_own() -> None:
    t = start(TASK_LIMITED, {"account": "acc-1"})
    run = run_of(t)
    [slot] = requests(t)
    other = LimitGranted(**{**grant(slot).model_dump(), "request": "someone-else"})
    assert advance(TASK_LIMITED, run, completed("a", "x"), NOW + 1).applied
    assert advance(TASK_LIMITED, run, other, NOW + 2).applied is False
    assert run.nodes["a"].status == NodeStatus.QUEUED
