"""The run's side of flow control (core/gates.py), transition by transition.

A limited run starts queued and asks for its slot; a limited node opens its attempt queued and
asks its gates in order; every slot held is given back when what held it ends, and a slot asked
for and no longer wanted is given back when its grant arrives.
"""

from __future__ import annotations

from typing import Any

from events.models import (
    LIMIT_RELEASED,
    LIMIT_REQUESTED,
    LimitGranted,
    LimitRefused,
    LimitReleased,
    LimitRequested,
)
from orchestrator.core.commands import Emit
from orchestrator.core.limits import limiter_id
from orchestrator.core.machine import advance
from orchestrator.core.state import RunState, Transition
from orchestrator.core.statuses import NodeStatus, RunStatus
from tests.unit.machine_support import (
    NOW,
    RUN,
    cancel,
    completed,
    dispatched_keys,
    failed,
    fired,
    run_of,
    spec_of,
    start,
    started,
    timers,
)

RUN_LIMITED = spec_of(
    [{"id": "a", "task": "t", "inputs": {"x": "$.input.customer"}}],
    concurrency={"limit": 2, "key": "$.input.customer"},
)
TASK_LIMITED = spec_of(
    [
        {
            "id": "a",
            "task": "charge",
            "inputs": {"account": "$.input.account"},
            "concurrency": {"limit": 1, "key": "$.input.account"},
            "rate_limit": "10/s",
            "retry": {"max_attempts": 2, "backoff_s": 1.0},
        }
    ]
)


def requests(transition: Transition) -> list[LimitRequested]:
    return [
        c.data
        for c in transition.commands
        if isinstance(c, Emit)
        and c.event_type == LIMIT_REQUESTED
        and isinstance(c.data, LimitRequested)
    ]


def releases(transition: Transition) -> list[str]:
    return [
        c.data.request
        for c in transition.commands
        if isinstance(c, Emit)
        and c.event_type == LIMIT_RELEASED
        and isinstance(c.data, LimitReleased)
    ]


def grant(request: LimitRequested) -> LimitGranted:
    return LimitGranted(
        run_id=request.run_id,
        node_id=request.node_id,
        attempt=request.attempt,
        request=request.request,
        limiter=request.limiter,
    )


def test_a_limited_run_starts_queued_and_runs_once_granted() -> None:
    t = start(RUN_LIMITED, {"customer": "acme"})
    run = run_of(t)
    assert run.status == RunStatus.QUEUED
    assert dispatched_keys(t) == []
    [asked] = requests(t)
    assert asked.limiter == limiter_id("run", "wf", "acme")
    assert (asked.scope, asked.key, asked.limit, asked.node_id) == ("run", "acme", 2, None)
    assert asked.priority == 5

    t = advance(RUN_LIMITED, run, grant(asked), NOW + 1)
    assert run.status == RunStatus.RUNNING
    assert dispatched_keys(t) == ["a"]
    assert advance(RUN_LIMITED, run, grant(asked), NOW + 2).applied is False  # a duplicate

    t = advance(RUN_LIMITED, run, completed("a", 1), NOW + 3)
    assert run.status == RunStatus.SUCCEEDED
    assert releases(t) == [asked.request]  # the run's slot goes back as it ends


def test_a_run_cancelled_while_queued_gives_its_slot_back_when_granted() -> None:
    t = start(RUN_LIMITED, {"customer": "acme"})
    run = run_of(t)
    [asked] = requests(t)
    t = advance(RUN_LIMITED, run, cancel("no longer needed"), NOW + 1)
    assert run.status == RunStatus.CANCELLED
    assert releases(t) == []  # not granted yet: nothing to give back, and no release before it
    assert set(run.abandoned) == {asked.request}

    t = advance(RUN_LIMITED, run, grant(asked), NOW + 2)
    assert t.applied and releases(t) == [asked.request]
    assert run.abandoned == {}
    assert advance(RUN_LIMITED, run, grant(asked), NOW + 3).applied is False


def test_a_refused_run_is_cancelled_with_the_limiters_reason() -> None:
    spec = spec_of(
        [{"id": "a", "task": "t"}], concurrency={"limit": 1, "on_limit": "cancel_newest"}
    )
    t = start(spec)
    [asked] = requests(t)
    assert asked.on_limit == "cancel_newest" and asked.key == ""
    refusal = LimitRefused(
        run_id=RUN, request=asked.request, limiter=asked.limiter, reason="limit reached"
    )
    t = advance(spec, run_of(t), refusal, NOW + 1)
    run = run_of(t)
    assert run.status == RunStatus.CANCELLED
    assert run.error == {"type": "Cancelled", "message": "limit reached", "retryable": False}
    assert releases(t) == [] and run.abandoned == {}


def test_a_key_that_cannot_be_evaluated_fails_the_run() -> None:
    t = start(RUN_LIMITED, {})
    run = run_of(t)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error["type"] == "ExpressionError"
    assert "no key 'customer'" in run.error["message"]
    assert requests(t) == []


def test_a_retried_run_queues_again_with_a_new_request() -> None:
    t = start(RUN_LIMITED, {"customer": "acme"})
    run = run_of(t)
    [first] = requests(t)
    advance(RUN_LIMITED, run, grant(first), NOW)
    advance(RUN_LIMITED, run, failed("a", 1, retryable=False), NOW)
    assert run.status == RunStatus.FAILED
    from events.models import RunRetryRequested

    t = advance(RUN_LIMITED, run, RunRetryRequested(run_id=RUN), NOW + 1)
    assert run.status == RunStatus.QUEUED
    [again] = requests(t)
    assert again.request != first.request
    t = advance(RUN_LIMITED, run, grant(again), NOW + 2)
    assert run.status == RunStatus.RUNNING and dispatched_keys(t) == ["a"]


def _limited_node(run_input: dict[str, Any] | None = None) -> tuple[RunState, LimitRequested]:
    t = start(TASK_LIMITED, run_input or {"account": "acct-1"})
    [asked] = requests(t)
    return run_of(t), asked


def test_a_limited_task_asks_its_gates_in_order_then_is_dispatched() -> None:
    run, concurrency = _limited_node()
    node = run.nodes["a"]
    assert run.status == RunStatus.RUNNING and node.status == NodeStatus.QUEUED
    assert (concurrency.scope, concurrency.key, concurrency.name) == ("task", "acct-1", "charge")
    assert concurrency.limiter == limiter_id("task", "charge", "acct-1")
    assert node.attempts[-1].status == NodeStatus.QUEUED

    t = advance(TASK_LIMITED, run, grant(concurrency), NOW + 1)
    [rate] = requests(t)
    assert (rate.scope, rate.key, rate.per_s, rate.limit) == ("rate", "", 1.0, 10)
    assert dispatched_keys(t) == [] and node.status == NodeStatus.QUEUED

    t = advance(TASK_LIMITED, run, grant(rate), NOW + 2)
    assert dispatched_keys(t) == ["a"] and node.status == NodeStatus.DISPATCHED
    assert node.attempts[-1].queued_at == NOW and node.attempts[-1].dispatched_at == NOW + 2

    advance(TASK_LIMITED, run, started("a"), NOW + 3)
    t = advance(TASK_LIMITED, run, completed("a", "ok"), NOW + 4)
    # The concurrency slot goes back; the rate token was spent (it ages out on its own).
    assert releases(t) == [concurrency.request]
    assert run.status == RunStatus.SUCCEEDED


def test_a_retry_asks_again_and_holds_nothing_through_its_backoff() -> None:
    run, concurrency = _limited_node()
    t = advance(TASK_LIMITED, run, grant(concurrency), NOW)
    [rate] = requests(t)
    advance(TASK_LIMITED, run, grant(rate), NOW)
    t = advance(TASK_LIMITED, run, failed("a", 1), NOW + 1)
    assert run.nodes["a"].status == NodeStatus.RETRYING
    assert releases(t) == [concurrency.request]
    [retry_timer] = timers(t, "retry")
    t = advance(TASK_LIMITED, run, fired(retry_timer), NOW + 3)
    [again] = requests(t)
    assert run.nodes["a"].status == NodeStatus.QUEUED
    assert again.attempt == 2 and again.request != concurrency.request


def test_a_cancelled_run_gives_back_what_it_holds_and_abandons_what_it_asked() -> None:
    run, concurrency = _limited_node()
    t = advance(TASK_LIMITED, run, grant(concurrency), NOW)
    [rate] = requests(t)
    t = advance(TASK_LIMITED, run, cancel(), NOW + 1)
    assert run.nodes["a"].status == NodeStatus.CANCELLED
    assert releases(t) == [concurrency.request]  # held: back at once
    assert set(run.abandoned) == {rate.request}  # asked: back when granted
    t = advance(TASK_LIMITED, run, grant(rate), NOW + 2)
    assert releases(t) == [rate.request]  # an unused token is given back


def test_a_task_key_that_cannot_be_evaluated_fails_the_node() -> None:
    spec = spec_of(
        [
            {
                "id": "a",
                "task": "t",
                "inputs": {"account": "$.input.account"},
                "concurrency": {"limit": 1, "key": "$.input.account.id"},
            }
        ]
    )
    run = run_of(start(spec, {"account": "flat"}))
    assert run.nodes["a"].status == NodeStatus.FAILED
    assert run.status == RunStatus.FAILED
    assert run.error is not None and "expected an object" in run.error["message"]


def test_map_max_parallel_starts_the_next_child_as_one_ends() -> None:
    spec = spec_of(
        [
            {
                "id": "each",
                "task": "t",
                "map": {"over": "$.input.items", "param": "x", "max_parallel": 2},
            }
        ]
    )
    t = start(spec, {"items": [1, 2, 3, 4, 5]})
    run = run_of(t)
    assert dispatched_keys(t) == ["each[0]", "each[1]"]
    assert run.nodes["each[4]"].status == NodeStatus.WAITING
    t = advance(spec, run, completed("each[1]", 2), NOW)
    assert dispatched_keys(t) == ["each[2]"]
    for key in ("each[0]", "each[2]"):
        t = advance(spec, run, completed(key, 0), NOW)
    assert dispatched_keys(t) == ["each[4]"]
    advance(spec, run, completed("each[3]", 0), NOW)
    advance(spec, run, completed("each[4]", 0), NOW)
    assert run.status == RunStatus.SUCCEEDED
    assert run.nodes["each"].output == [0, 2, 0, 0, 0]


def test_a_retried_run_restarts_a_bounded_map_within_its_bound() -> None:
    spec = spec_of(
        [
            {
                "id": "each",
                "task": "t",
                "map": {"over": "$.input.items", "param": "x", "max_parallel": 2},
            }
        ]
    )
    run = run_of(start(spec, {"items": [1, 2, 3, 4]}))
    advance(spec, run, completed("each[0]", 0), NOW)
    advance(spec, run, failed("each[1]", 1, retryable=False), NOW)
    assert run.status == RunStatus.FAILED
    from events.models import RunRetryRequested

    t = advance(spec, run, RunRetryRequested(run_id=RUN), NOW + 1)
    assert dispatched_keys(t) == ["each[1]", "each[2]"]  # each[0] succeeded already
    assert run.nodes["each[3]"].status == NodeStatus.WAITING
