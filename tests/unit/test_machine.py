"""The machine's rules, one at a time: events in, (state, commands) out, no I/O.

`advance` updates the run in place, so every test that compares a state with an earlier one
takes a deep copy first.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from events.models import (
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_SUCCEEDED,
    TASK_CANCEL_REQUESTED,
    TimerFired,
)
from orchestrator.core.compiler import CompiledSpec
from orchestrator.core.machine import DEADLINE_GRACE_S, RunEvent, advance
from orchestrator.core.rules import backoff_delay
from orchestrator.core.spec import RetryPolicy
from orchestrator.core.state import RunState, Transition
from orchestrator.core.statuses import NodeStatus, RunStatus
from orchestrator.errors import EventRejected
from tests.unit.machine_support import (
    NOW,
    RUN,
    cancel,
    cancelled_timers,
    completed,
    dispatched_keys,
    dispatches,
    emits,
    failed,
    fired,
    run_of,
    spec_of,
    start,
    started,
    timers,
)

# ---- start ----------------------------------------------------------------------------------


def test_start_dispatches_only_root_nodes_with_inputs_from_run_input() -> None:
    spec = spec_of(
        [
            {"id": "a", "task": "ta", "inputs": {"n": "$.input.n", "fixed": 3}},
            {"id": "b", "task": "tb", "inputs": {"x": "$.nodes.a"}},
            {"id": "c", "task": "tc", "queue": "gpu", "inputs": {"who": "$.input.user.name"}},
            {"id": "d", "task": "td", "depends_on": ["c"]},
        ]
    )
    out = start(spec, {"n": 7, "user": {"name": "ada"}})
    run = run_of(out)

    assert out.created and out.applied
    assert run.status == RunStatus.RUNNING
    by_key = {d.node_key: d for d in dispatches(out)}
    assert sorted(by_key) == ["a", "c"]
    assert by_key["a"].input == {"n": 7, "fixed": 3}
    assert (by_key["a"].task, by_key["a"].queue, by_key["a"].attempt) == ("ta", "default", 1)
    assert by_key["c"].input == {"who": "ada"}
    assert by_key["c"].queue == "gpu"
    assert {k: n.status for k, n in run.nodes.items()} == {
        "a": NodeStatus.DISPATCHED,
        "b": NodeStatus.WAITING,
        "c": NodeStatus.DISPATCHED,
        "d": NodeStatus.WAITING,
    }


def test_start_applies_input_schema_defaults() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "default": 5}, "tag": {"type": "string"}},
    }
    spec = spec_of([{"id": "a", "task": "t", "inputs": {"n": "$.input.n"}}], input_schema=schema)
    out = start(spec, {"tag": "x"})

    assert run_of(out).input == {"tag": "x", "n": 5}
    assert dispatches(out)[0].input == {"n": 5}


@pytest.mark.parametrize(
    ("run_input", "field"),
    [({"count": "three"}, "input.count"), ({}, "'count' is a required property")],
    ids=["wrong-type", "missing"],
)
def test_invalid_input_fails_the_run_at_once_naming_the_field(
    run_input: dict[str, Any], field: str
) -> None:
    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer"}},
        "required": ["count"],
    }
    spec = spec_of([{"id": "a", "task": "t"}], input_schema=schema)
    out = start(spec, run_input)
    run = run_of(out)

    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["type"] == "InvalidInput"
    assert run.error["retryable"] is False
    assert field in run.error["message"]
    assert dispatches(out) == []
    [emitted] = emits(out, RUN_FAILED)
    assert emitted.data.error.type == "InvalidInput"  # type: ignore[attr-defined]


# ---- dependencies ---------------------------------------------------------------------------


def test_linear_chain_advances_on_completion_and_succeeds_with_output() -> None:
    spec = spec_of(
        [
            {"id": "a", "task": "t", "inputs": {"n": "$.input.n"}},
            {"id": "b", "task": "t", "inputs": {"v": "$.nodes.a.v"}},
            {"id": "c", "task": "t", "inputs": {"all": "$.nodes.b"}},
        ],
        output={"final": "$.nodes.c", "first": "$.nodes.a.v", "n": "$.input.n"},
    )
    run = run_of(start(spec, {"n": 1}))

    out = advance(spec, run, completed("a", {"v": 10}), NOW + 1)
    assert dispatched_keys(out) == ["b"]
    assert dispatches(out)[0].input == {"v": 10}
    assert run.status == RunStatus.RUNNING

    out = advance(spec, run, completed("b", [1, 2]), NOW + 2)
    assert dispatched_keys(out) == ["c"]
    assert dispatches(out)[0].input == {"all": [1, 2]}

    out = advance(spec, run, completed("c", "done"), NOW + 3)
    assert dispatches(out) == []
    assert run.status == RunStatus.SUCCEEDED
    assert run.finished_at == NOW + 3
    assert run.output == {"final": "done", "first": 10, "n": 1}
    [emitted] = emits(out, RUN_SUCCEEDED)
    assert emitted.data.output == run.output  # type: ignore[attr-defined]


def test_parallel_branches_run_together_and_the_join_waits_for_both() -> None:
    spec = spec_of(
        [
            {"id": "a", "task": "t"},
            {"id": "b", "task": "t", "inputs": {"v": "$.nodes.a"}},
            {"id": "c", "task": "t", "inputs": {"v": "$.nodes.a"}},
            {"id": "d", "task": "t", "inputs": {"pair": ["$.nodes.b", "$.nodes.c"]}},
        ],
        output="$.nodes.d",
    )
    run = run_of(start(spec))

    out = advance(spec, run, completed("a", 1), NOW)
    assert sorted(dispatched_keys(out)) == ["b", "c"]

    out = advance(spec, run, completed("c", "C"), NOW)
    assert dispatches(out) == []
    assert run.nodes["d"].status == NodeStatus.WAITING

    out = advance(spec, run, completed("b", "B"), NOW)
    assert dispatched_keys(out) == ["d"]
    assert dispatches(out)[0].input == {"pair": ["B", "C"]}

    advance(spec, run, completed("d", "joined"), NOW)
    assert (run.status, run.output) == (RunStatus.SUCCEEDED, "joined")


# ---- retries --------------------------------------------------------------------------------

RETRY = {"max_attempts": 3, "backoff_s": 2.0, "backoff_multiplier": 3.0, "jitter": 0.2}


def retry_spec(**policy: Any) -> CompiledSpec:
    return spec_of(
        [{"id": "a", "task": "t", "inputs": {"n": "$.input.n"}, "retry": {**RETRY, **policy}}],
        output="$.nodes.a",
    )


def test_retryable_failure_waits_on_a_retry_timer_with_jittered_backoff() -> None:
    spec = retry_spec()
    run = run_of(start(spec, {"n": 4}))
    policy = spec.nodes["a"].spec.retry

    out = advance(spec, run, failed("a"), NOW + 5)

    assert run.nodes["a"].status == NodeStatus.RETRYING
    assert run.status == RunStatus.RUNNING
    assert dispatches(out) == []
    [timer] = timers(out)
    assert (timer.kind, timer.node_key, timer.attempt) == ("retry", "a", 1)
    delay = backoff_delay(policy, RUN, "a", 1)
    assert timer.due_at == NOW + 5 + delay
    assert 2.0 * 0.8 <= delay <= 2.0 * 1.2
    assert run.nodes["a"].attempts[0].error is not None
    assert run.nodes["a"].attempts[0].status == NodeStatus.FAILED

    # The second failure backs off from the multiplied base (2 * 3 = 6 s).
    advance(spec, run, fired(timer), NOW + 10)
    out = advance(spec, run, failed("a", attempt=2), NOW + 11)
    [timer] = timers(out)
    assert 6.0 * 0.8 <= timer.due_at - (NOW + 11) <= 6.0 * 1.2


def test_backoff_delay_is_deterministic_jittered_and_capped() -> None:
    policy = RetryPolicy(backoff_s=10.0, backoff_multiplier=2.0, backoff_max_s=50.0, jitter=0.5)

    assert backoff_delay(policy, "r", "a", 1) == backoff_delay(policy, "r", "a", 1)
    delays = {backoff_delay(policy, f"r{i}", "a", 1) for i in range(50)}
    assert len(delays) == 50  # different ids give different jitter
    assert all(5.0 <= d <= 15.0 for d in delays)
    assert backoff_delay(policy, "r", "a", 1) != backoff_delay(policy, "r", "b", 1)
    # From attempt 4 the exponential (80, 160, ...) is over the cap; jitter never exceeds it.
    late = [backoff_delay(policy, f"r{i}", "a", n) for i in range(50) for n in range(4, 12)]
    assert all(25.0 <= d <= 50.0 for d in late)
    assert max(late) == 50.0
    no_jitter = RetryPolicy(backoff_s=1.5, backoff_multiplier=2.0, jitter=0.0)
    assert [backoff_delay(no_jitter, "r", "a", n) for n in (1, 2, 3)] == [1.5, 3.0, 6.0]


def test_retry_timer_dispatches_the_next_attempt_with_the_same_input() -> None:
    spec = retry_spec()
    run = run_of(start(spec, {"n": 4}))
    [timer] = timers(advance(spec, run, failed("a"), NOW))

    out = advance(spec, run, fired(timer), NOW + 3)

    [dispatch] = dispatches(out)
    assert (dispatch.node_key, dispatch.attempt, dispatch.input) == ("a", 2, {"n": 4})
    assert run.nodes["a"].status == NodeStatus.DISPATCHED
    assert [a.attempt for a in run.nodes["a"].attempts] == [1, 2]

    advance(spec, run, completed("a", "ok", attempt=2), NOW + 4)
    assert (run.status, run.output) == (RunStatus.SUCCEEDED, "ok")


def test_exhausted_attempts_fail_the_run_with_the_node_error() -> None:
    spec = retry_spec(max_attempts=2)
    run = run_of(start(spec, {"n": 1}))
    [timer] = timers(advance(spec, run, failed("a", message="first"), NOW))
    advance(spec, run, fired(timer), NOW)

    out = advance(spec, run, failed("a", attempt=2, message="second"), NOW + 1)

    assert timers(out) == []
    assert run.status == RunStatus.FAILED
    assert run.nodes["a"].status == NodeStatus.FAILED
    assert run.error is not None
    assert (run.error["type"], run.error["message"], run.error["node_id"]) == (
        "ValueError",
        "second",
        "a",
    )
    assert run.nodes["a"].error == run.error
    [emitted] = emits(out, RUN_FAILED)
    assert emitted.data.error.node_id == "a"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("policy", "event"),
    [
        ({}, failed("a", retryable=False)),
        ({"non_retryable": ["KeyError"]}, failed("a", error_type="KeyError")),
    ],
    ids=["retryable-false", "type-in-non_retryable"],
)
def test_non_retryable_failure_fails_at_once(policy: dict[str, Any], event: RunEvent) -> None:
    spec = retry_spec(max_attempts=5, **policy)
    run = run_of(start(spec, {"n": 1}))

    out = advance(spec, run, event, NOW)

    assert timers(out) == []
    assert run.status == RunStatus.FAILED
    assert run.nodes["a"].attempt == 1
    assert run.error is not None and run.error["node_id"] == "a"


# ---- execution timeouts ---------------------------------------------------------------------


def timeout_spec(max_attempts: int = 2) -> CompiledSpec:
    retry = {"max_attempts": max_attempts, "backoff_s": 1.0}
    return spec_of([{"id": "a", "task": "t", "timeout_s": 30, "retry": retry}])


def test_started_attempt_with_a_timeout_gets_a_deadline_timer() -> None:
    spec = timeout_spec()
    run = run_of(start(spec))

    out = advance(spec, run, started("a"), NOW + 2)

    [timer] = timers(out)
    assert (timer.kind, timer.node_key, timer.attempt) == ("deadline", "a", 1)
    assert timer.due_at == NOW + 2 + 30 + DEADLINE_GRACE_S
    assert run.nodes["a"].status == NodeStatus.RUNNING


def test_started_attempt_without_a_timeout_gets_no_timer() -> None:
    spec = spec_of([{"id": "a", "task": "t"}])
    run = run_of(start(spec))
    assert timers(advance(spec, run, started("a"), NOW)) == []


def test_deadline_fails_the_running_attempt_and_follows_the_retry_policy() -> None:
    spec = timeout_spec()
    run = run_of(start(spec))
    [deadline] = timers(advance(spec, run, started("a"), NOW))

    out = advance(spec, run, fired(deadline), NOW + 31)

    [cancel_req] = emits(out, TASK_CANCEL_REQUESTED)
    assert (cancel_req.data.node_id, cancel_req.data.attempt) == ("a", 1)  # type: ignore[attr-defined]
    error = run.nodes["a"].attempts[0].error
    assert error is not None
    assert (error["type"], error["retryable"]) == ("TimeoutError", True)
    assert run.nodes["a"].status == NodeStatus.RETRYING
    [retry] = timers(out, "retry")
    assert retry.attempt == 1


def test_deadline_on_the_last_attempt_fails_the_run() -> None:
    spec = timeout_spec(max_attempts=1)
    run = run_of(start(spec))
    [deadline] = timers(advance(spec, run, started("a"), NOW))

    out = advance(spec, run, fired(deadline), NOW + 31)

    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert (run.error["type"], run.error["node_id"]) == ("TimeoutError", "a")
    assert len(emits(out, TASK_CANCEL_REQUESTED)) == 1


def test_completion_cancels_the_deadline_timer() -> None:
    spec = timeout_spec()
    run = run_of(start(spec))
    [deadline] = timers(advance(spec, run, started("a"), NOW))

    out = advance(spec, run, completed("a", 1), NOW + 1)

    assert cancelled_timers(out) == [deadline.timer_id]
    assert run.status == RunStatus.SUCCEEDED


# ---- stale and duplicate events -------------------------------------------------------------


def _retried_twice() -> tuple[CompiledSpec, RunState, list[TimerFired]]:
    """Node `a` (with a deadline) failed attempt 1 and runs attempt 2; `b` waits on it."""
    spec = spec_of(
        [
            {"id": "a", "task": "t", "timeout_s": 5, "retry": {"max_attempts": 3}},
            {"id": "b", "task": "t", "depends_on": ["a"]},
        ]
    )
    run = run_of(start(spec))
    old_deadline = fired(timers(advance(spec, run, started("a"), NOW))[0])
    retry = fired(timers(advance(spec, run, failed("a"), NOW), "retry")[0])
    advance(spec, run, retry, NOW)
    advance(spec, run, started("a", attempt=2), NOW)
    return spec, run, [old_deadline, retry]


def _finished() -> tuple[CompiledSpec, RunState]:
    spec = spec_of([{"id": "a", "task": "t", "timeout_s": 5}])
    run = run_of(start(spec))
    advance(spec, run, started("a"), NOW)
    advance(spec, run, completed("a", "x"), NOW)
    assert run.status == RunStatus.SUCCEEDED
    return spec, run


def _assert_changes_nothing(spec: CompiledSpec, run: RunState, event: RunEvent) -> None:
    before = copy.deepcopy(run)
    out = advance(spec, run, event, NOW + 99)  # a later clock: even updated_at must not move
    assert out.applied is False
    assert out.commands == []
    assert out.changed == set()
    assert run == before


def test_old_attempt_result_after_retry_dispatched_is_stale() -> None:
    spec, run, _ = _retried_twice()
    _assert_changes_nothing(spec, run, completed("a", "late", attempt=1))
    _assert_changes_nothing(spec, run, failed("a", attempt=1))


def test_timers_of_an_old_attempt_are_stale() -> None:
    spec, run, [old_deadline, retry] = _retried_twice()
    _assert_changes_nothing(spec, run, old_deadline)
    _assert_changes_nothing(spec, run, retry)


def test_duplicate_start_is_stale() -> None:
    spec, run, _ = _retried_twice()
    _assert_changes_nothing(spec, run, started("a", attempt=2, worker="w2"))


def test_duplicate_completion_is_stale() -> None:
    spec = spec_of([{"id": "a", "task": "t"}, {"id": "b", "task": "t", "depends_on": ["a"]}])
    run = run_of(start(spec))
    advance(spec, run, completed("a", 1), NOW)
    _assert_changes_nothing(spec, run, completed("a", 2))
    _assert_changes_nothing(spec, run, failed("a"))


def test_start_after_completion_is_stale() -> None:
    spec = spec_of([{"id": "a", "task": "t"}, {"id": "b", "task": "t", "depends_on": ["a"]}])
    run = run_of(start(spec))
    advance(spec, run, completed("a", 1), NOW)
    _assert_changes_nothing(spec, run, started("a"))


def test_deadline_after_completion_is_stale() -> None:
    spec = spec_of([{"id": "a", "task": "t", "timeout_s": 5}, {"id": "b", "task": "t"}])
    run = run_of(start(spec))
    deadline = fired(timers(advance(spec, run, started("a"), NOW))[0])
    advance(spec, run, completed("a", 1), NOW)
    _assert_changes_nothing(spec, run, deadline)


@pytest.mark.parametrize(
    "event",
    [
        completed("a", "again"),
        failed("a"),
        started("a"),
        cancel(),
        TimerFired(run_id=RUN, timer_id="t", kind="deadline", node_id="a", attempt=1),
    ],
    ids=["completed", "failed", "started", "cancel", "timer"],
)
def test_any_event_after_the_run_ended_is_stale(event: RunEvent) -> None:
    spec, run = _finished()
    _assert_changes_nothing(spec, run, event)


# ---- cancellation ---------------------------------------------------------------------------


def test_cancel_mid_run_stops_in_flight_work_and_ignores_later_results() -> None:
    spec = spec_of(
        [
            {"id": "a", "task": "t", "timeout_s": 10},
            {"id": "b", "task": "t", "retry": {"max_attempts": 3}},
            {"id": "c", "task": "t"},
            {"id": "d", "task": "t", "depends_on": ["a", "b", "c"]},
        ]
    )
    run = run_of(start(spec))
    [deadline] = timers(advance(spec, run, started("a"), NOW))
    [retry] = timers(advance(spec, run, failed("b"), NOW))
    advance(spec, run, completed("c", 1), NOW)

    out = advance(spec, run, cancel("user asked"), NOW + 1)

    assert run.status == RunStatus.CANCELLED
    assert run.finished_at == NOW + 1
    assert {k: n.status for k, n in run.nodes.items()} == {
        "a": NodeStatus.CANCELLED,
        "b": NodeStatus.CANCELLED,
        "c": NodeStatus.SUCCEEDED,
        "d": NodeStatus.CANCELLED,
    }
    requests = emits(out, TASK_CANCEL_REQUESTED)
    assert [(e.data.node_id, e.data.attempt) for e in requests] == [("a", 1)]  # type: ignore[attr-defined]
    assert sorted(cancelled_timers(out)) == sorted([deadline.timer_id, retry.timer_id])
    [emitted] = emits(out, RUN_CANCELLED)
    assert emitted.data.reason == "user asked"  # type: ignore[attr-defined]
    assert dispatches(out) == []

    _assert_changes_nothing(spec, run, completed("a", "late"))
    _assert_changes_nothing(spec, run, fired(retry))


# ---- map: fan-out and fan-in ----------------------------------------------------------------


def map_spec(over: Any = "$.input.items", retry: dict[str, Any] | None = None) -> CompiledSpec:
    return spec_of(
        [
            {
                "id": "m",
                "task": "square",
                "inputs": {"scale": "$.input.scale", "tag": "$.item.tag"},
                "map": {"over": over, "param": "x"},
                "retry": retry or {"max_attempts": 1},
            },
            {"id": "total", "task": "sum", "inputs": {"values": "$.nodes.m"}},
        ],
        output={"values": "$.nodes.m", "total": "$.nodes.total"},
    )


ITEMS = [{"tag": "p"}, {"tag": "q"}, {"tag": "r"}]


def test_map_fans_out_one_child_per_element_with_the_item_bound() -> None:
    out = start(map_spec(), {"items": ITEMS, "scale": 2})
    run = run_of(out)

    assert [(d.node_key, d.attempt, d.task) for d in dispatches(out)] == [
        ("m[0]", 1, "square"),
        ("m[1]", 1, "square"),
        ("m[2]", 1, "square"),
    ]
    assert [d.input for d in dispatches(out)] == [
        {"scale": 2, "tag": t["tag"], "x": t} for t in ITEMS
    ]
    assert run.nodes["m"].status == NodeStatus.RUNNING
    assert run.nodes["m"].children == 3
    assert [run.nodes[f"m[{i}]"].index for i in range(3)] == [0, 1, 2]


def test_map_parent_succeeds_with_ordered_outputs_and_feeds_the_fan_in() -> None:
    spec = map_spec()
    run = run_of(start(spec, {"items": ITEMS, "scale": 2}))

    for index in (2, 0):
        out = advance(spec, run, completed(f"m[{index}]", index * 10), NOW)
        assert dispatches(out) == []
        assert run.nodes["m"].status == NodeStatus.RUNNING

    out = advance(spec, run, completed("m[1]", 10), NOW)
    assert run.nodes["m"].status == NodeStatus.SUCCEEDED
    assert run.nodes["m"].output == [0, 10, 20]
    [dispatch] = dispatches(out)
    assert (dispatch.node_key, dispatch.input) == ("total", {"values": [0, 10, 20]})

    advance(spec, run, completed("total", 30), NOW)
    assert (run.status, run.output) == (RunStatus.SUCCEEDED, {"values": [0, 10, 20], "total": 30})


def test_map_over_an_empty_list_succeeds_with_an_empty_list() -> None:
    out = start(map_spec(), {"items": [], "scale": 1})
    run = run_of(out)

    assert run.nodes["m"].status == NodeStatus.SUCCEEDED
    assert run.nodes["m"].output == []
    assert [(d.node_key, d.input) for d in dispatches(out)] == [("total", {"values": []})]


def test_map_over_a_non_list_fails_the_node_with_a_non_retryable_expression_error() -> None:
    spec = map_spec(retry={"max_attempts": 5})
    out = start(spec, {"items": {"not": "a list"}, "scale": 1})
    run = run_of(out)

    assert run.status == RunStatus.FAILED
    assert run.nodes["m"].status == NodeStatus.FAILED
    assert run.error is not None
    assert (run.error["type"], run.error["retryable"], run.error["node_id"]) == (
        "ExpressionError",
        False,
        "m",
    )
    assert "must give a list" in run.error["message"]
    assert dispatches(out) == []
    assert timers(out) == []


def test_map_element_whose_input_cannot_be_evaluated_leaves_no_children() -> None:
    # The third element has no "tag": the node fails before any child exists.
    out = start(map_spec(), {"items": [*ITEMS[:2], {}], "scale": 1})
    run = run_of(out)

    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error["type"] == "ExpressionError"
    assert sorted(run.nodes) == ["m", "total"]
    assert dispatches(out) == []
    assert emits(out, TASK_CANCEL_REQUESTED) == []


def test_a_run_failing_in_the_pass_that_dispatched_withdraws_those_dispatches() -> None:
    spec = spec_of(
        [
            {"id": "a", "task": "t"},
            {"id": "b", "task": "t", "inputs": {"v": "$.input.missing"}},
        ]
    )
    out = start(spec, {})
    run = run_of(out)

    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error["node_id"] == "b"
    assert dispatches(out) == []
    assert emits(out, TASK_CANCEL_REQUESTED) == []
    assert run.nodes["a"].status == NodeStatus.CANCELLED


def test_a_mapped_child_failing_for_good_fails_the_run_and_cancels_siblings() -> None:
    spec = map_spec(retry={"max_attempts": 2})
    run = run_of(start(spec, {"items": ITEMS, "scale": 1}))
    advance(spec, run, completed("m[0]", 0), NOW)
    [retry] = timers(advance(spec, run, failed("m[2]", retryable=True), NOW))

    out = advance(spec, run, failed("m[1]", retryable=False, message="bad row"), NOW)

    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert (run.error["node_id"], run.error["message"]) == ("m[1]", "bad row")
    assert run.nodes["m"].status == NodeStatus.FAILED
    assert run.nodes["m"].error == run.error
    assert run.nodes["m[0]"].status == NodeStatus.SUCCEEDED
    assert run.nodes["m[2]"].status == NodeStatus.CANCELLED
    assert run.nodes["total"].status == NodeStatus.CANCELLED
    assert cancelled_timers(out) == [retry.timer_id]
    _assert_changes_nothing(spec, run, fired(retry))


def test_a_timer_naming_a_mapped_parent_changes_nothing() -> None:
    spec = map_spec()
    run = run_of(start(spec, {"items": ITEMS, "scale": 1}))
    event = TimerFired(run_id=RUN, timer_id="t", kind="deadline", node_id="m", attempt=0)
    _assert_changes_nothing(spec, run, event)


# ---- conditions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "operand", "value", "runs"),
    [
        ("truthy", None, [1], True),
        ("truthy", None, 0, False),
        ("falsy", None, "", True),
        ("falsy", None, "x", False),
        ("eq", "prod", "prod", True),
        ("eq", "prod", "dev", False),
        ("ne", "prod", "dev", True),
        ("gt", 0.8, 0.9, True),
        ("gt", 0.8, 0.8, False),
        ("ge", 0.8, 0.8, True),
        ("lt", 3, 2, True),
        ("le", 3, 4, False),
        ("in", ["a", "b"], "b", True),
        ("in", ["a", "b"], "c", False),
        ("not_in", ["a", "b"], "c", True),
    ],
)
def test_when_condition_runs_or_skips_the_node(
    op: str, operand: Any, value: Any, runs: bool
) -> None:
    when = {"value": "$.nodes.score", "op": op, "operand": operand}
    spec = spec_of(
        [
            {"id": "score", "task": "t"},
            {"id": "publish", "task": "t", "when": when},
        ]
    )
    run = run_of(start(spec))

    out = advance(spec, run, completed("score", value), NOW)

    assert dispatched_keys(out) == (["publish"] if runs else [])
    assert run.nodes["publish"].status == (NodeStatus.DISPATCHED if runs else NodeStatus.SKIPPED)
    assert run.status == (RunStatus.RUNNING if runs else RunStatus.SUCCEEDED)


def test_a_condition_that_cannot_compare_fails_the_node() -> None:
    when = {"value": "$.input.v", "op": "gt", "operand": 1}
    spec = spec_of([{"id": "a", "task": "t", "when": when}])
    run = run_of(start(spec, {"v": "text"}))

    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert (run.error["type"], run.error["node_id"]) == ("ExpressionError", "a")


def test_skipped_propagates_to_dependents_and_the_output_sees_none() -> None:
    spec = spec_of(
        [
            {"id": "gate", "task": "t", "when": {"value": "$.input.go"}},
            {"id": "after", "task": "t", "inputs": {"v": "$.nodes.gate"}},
            {"id": "side", "task": "t"},
        ],
        output={"gate": "$.nodes.gate", "after": "$.nodes.after", "side": "$.nodes.side"},
    )
    out = start(spec, {"go": False})
    run = run_of(out)

    assert dispatched_keys(out) == ["side"]
    assert run.nodes["gate"].status == NodeStatus.SKIPPED
    assert run.nodes["after"].status == NodeStatus.SKIPPED

    advance(spec, run, completed("side", "s"), NOW)
    assert run.status == RunStatus.SUCCEEDED
    assert run.output == {"gate": None, "after": None, "side": "s"}


def test_an_output_path_into_a_skipped_node_gives_none() -> None:
    spec = spec_of(
        [
            {"id": "work", "task": "t"},
            {"id": "publish", "task": "t", "when": {"value": "$.nodes.work.ok"}},
        ],
        output={"url": "$.nodes.publish.url", "first": ["$.nodes.publish[0]", "$.nodes.work.ok"]},
    )
    run = run_of(start(spec))

    advance(spec, run, completed("work", {"ok": False}), NOW)

    assert run.nodes["publish"].status == NodeStatus.SKIPPED
    assert run.status == RunStatus.SUCCEEDED
    assert run.output == {"url": None, "first": [None, False]}


def test_an_output_path_that_does_not_resolve_fails_the_run() -> None:
    spec = spec_of([{"id": "work", "task": "t"}], output="$.nodes.work.missing")
    run = run_of(start(spec))

    out = advance(spec, run, completed("work", {"ok": True}), NOW)

    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error["type"] == "ExpressionError"
    assert "missing" in run.error["message"]
    assert emits(out, RUN_SUCCEEDED) == []


# ---- contract violations --------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        completed("nope", 1),
        started("a[0]"),
        TimerFired(run_id=RUN, timer_id="t", kind="retry", node_id="ghost", attempt=1),
    ],
    ids=["completed", "started", "timer"],
)
def test_an_event_for_an_unknown_node_is_rejected_and_changes_nothing(event: RunEvent) -> None:
    spec = spec_of([{"id": "a", "task": "t"}])
    run = run_of(start(spec))
    before = copy.deepcopy(run)

    with pytest.raises(EventRejected, match="has no node"):
        advance(spec, run, event, NOW + 5)

    assert run == before


# ---- Transition.changed ---------------------------------------------------------------------


def _written(before: RunState, after: RunState) -> set[str]:
    return {key for key, node in after.nodes.items() if before.nodes.get(key) != node}


def test_changed_lists_exactly_the_node_keys_written() -> None:
    spec = spec_of(
        [
            {"id": "a", "task": "t", "timeout_s": 5, "retry": {"max_attempts": 2}},
            {"id": "m", "task": "t", "map": {"over": "$.nodes.a", "param": "x"}},
            {"id": "skip", "task": "t", "when": {"value": "$.nodes.a", "op": "falsy"}},
            {"id": "skip2", "task": "t", "depends_on": ["skip"]},
            {"id": "z", "task": "t", "depends_on": ["m"]},
        ]
    )
    first = start(spec)
    run = run_of(first)
    assert first.changed == set(run.nodes) == {"a", "m", "skip", "skip2", "z"}

    def step(event: RunEvent) -> Transition:
        before = copy.deepcopy(run)
        out = advance(spec, run, event, NOW)
        assert out.changed == _written(before, run), event
        return out

    out = step(started("a"))
    assert out.changed == {"a"}
    out = step(failed("a"))
    assert out.changed == {"a"}
    step(fired(timers(out, "retry")[0]))
    out = step(completed("a", [1, 2], attempt=2))
    assert out.changed == {"a", "m", "m[0]", "m[1]", "skip", "skip2"}
    out = step(completed("a", [1, 2], attempt=2))
    assert out.changed == set()
    out = step(completed("m[1]", "one"))
    assert out.changed == {"m[1]", "m"}
    out = step(cancel())
    assert out.changed == {"m[0]", "m", "z"}


# ---- manual retry of a run ----------------------------------------------------------------------


def test_retrying_a_failed_mapped_run_redispatches_only_what_did_not_succeed() -> None:
    from events.models import RunRetryRequested

    spec = map_spec(retry={"max_attempts": 2})
    run = run_of(start(spec, {"items": ITEMS, "scale": 1}))
    advance(spec, run, completed("m[0]", 0), NOW)
    advance(spec, run, failed("m[1]", retryable=False, message="bad row"), NOW)
    assert run.status == RunStatus.FAILED

    out = advance(spec, run, RunRetryRequested(run_id=RUN), NOW + 1)

    assert run.status == RunStatus.RUNNING and run.error is None
    # m[0] keeps its output; m[1] (failed) and m[2] (cancelled) run again as new attempts.
    assert sorted((d.node_key, d.attempt) for d in dispatches(out)) == [("m[1]", 2), ("m[2]", 2)]
    assert run.nodes["m"].status == NodeStatus.RUNNING
    assert run.nodes["total"].status == NodeStatus.WAITING
    # The retry budget starts again: attempt 2 may itself be retried once (max_attempts=2).
    [timer] = timers(advance(spec, run, failed("m[1]", attempt=2), NOW + 2), kind="retry")
    assert timer.attempt == 2
    assert run.status == RunStatus.RUNNING


def test_retry_of_a_running_or_succeeded_run_changes_nothing() -> None:
    from events.models import RunRetryRequested

    spec = map_spec()
    run = run_of(start(spec, {"items": ITEMS, "scale": 1}))
    _assert_changes_nothing(spec, run, RunRetryRequested(run_id=RUN))


def test_a_result_that_folds_its_start_dates_the_start_on_the_orchestrators_clock() -> None:
    """A short task sends no task.started: its result says how long it ran (`ran_s`), and the
    attempt's start is its end minus that, never before its dispatch."""
    spec = spec_of([{"id": "a", "task": "t"}, {"id": "b", "task": "t", "depends_on": ["a"]}])
    run = run_of(start(spec))
    done = completed("a", output=1).model_copy(update={"ran_s": 0.25})
    advance(spec, run, done, NOW + 1.0)
    first = run.nodes["a"].attempts[0]
    assert (first.started_at, first.finished_at) == (NOW + 0.75, NOW + 1.0)
    late = failed("b", retryable=False).model_copy(update={"ran_s": 99.0})
    advance(spec, run, late, NOW + 2.0)
    second = run.nodes["b"].attempts[0]
    assert second.started_at == second.dispatched_at == NOW + 1.0  # clamped to the dispatch


def test_a_folded_start_never_overrides_a_start_that_was_sent() -> None:
    spec = spec_of([{"id": "a", "task": "t"}])
    run = run_of(start(spec))
    advance(spec, run, started("a"), NOW + 0.5)
    advance(spec, run, completed("a").model_copy(update={"ran_s": 0.1}), NOW + 3.0)
    assert run.nodes["a"].attempts[0].started_at == NOW + 0.5
