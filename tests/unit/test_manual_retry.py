"""A manual retry of a run (`conveyor retry`) starts a fresh retry budget: its attempts, its
backoff and its duration count from the resume, not from the run's first life."""

from __future__ import annotations

from events.models import RunRetryRequested
from orchestrator.core.compiler import CompiledSpec
from orchestrator.core.machine import advance
from orchestrator.core.rules import backoff_delay
from orchestrator.core.state import RunState
from orchestrator.core.status import run_status
from orchestrator.core.statuses import NodeStatus, RunStatus
from tests.unit.machine_support import NOW, RUN, completed, failed, fired, run_of, spec_of, start
from tests.unit.machine_support import timers as timers_of

POLICY = {"max_attempts": 3, "backoff_s": 2.0, "backoff_multiplier": 3.0, "jitter": 0.0}


def _spec() -> CompiledSpec:
    return spec_of(
        [
            {"id": "a", "task": "t", "retry": POLICY},
            {"id": "b", "task": "t", "depends_on": ["a"]},
        ],
        output="$.nodes.b",
    )


def _failed_for_good(spec: CompiledSpec, now: float) -> RunState:
    """Node `a` spends its three attempts (each retry timer fired at once); the run fails."""
    run = run_of(start(spec, now=now))
    for attempt in (1, 2, 3):
        out = advance(spec, run, failed("a", attempt=attempt), now + attempt)
        for timer in timers_of(out, "retry"):
            advance(spec, run, fired(timer), now + attempt)
    assert run.status == RunStatus.FAILED
    return run


def test_after_a_manual_retry_the_backoff_starts_again_from_its_base() -> None:
    spec = _spec()
    run = _failed_for_good(spec, NOW)
    advance(spec, run, RunRetryRequested(run_id=RUN), NOW + 100)

    out = advance(spec, run, failed("a", attempt=4), NOW + 101)

    [timer] = timers_of(out, "retry")
    # The first retry of the new budget waits backoff_s (2 s), not 2 * 3**3 = 54 s as attempt 4
    # of the run's first life would.
    assert timer.due_at - (NOW + 101) == 2.0
    assert backoff_delay(spec.nodes["a"].spec.retry, RUN, "a", 4) == 54.0


def test_status_counts_attempts_since_the_last_manual_retry_against_the_policy() -> None:
    spec = _spec()
    run = _failed_for_good(spec, NOW)
    failed_status = run_status(run)["nodes"]["a"]
    assert (failed_status["attempts"], failed_status["attempts_since_retry"]) == (3, 3)

    advance(spec, run, RunRetryRequested(run_id=RUN), NOW + 100)
    node = run_status(run)["nodes"]["a"]
    assert (node["attempts"], node["attempts_since_retry"]) == (4, 1)  # "attempt 1 of 3"
    out = advance(spec, run, failed("a", attempt=4), NOW + 101)
    advance(spec, run, fired(timers_of(out, "retry")[0]), NOW + 103)
    node = run_status(run)["nodes"]["a"]
    assert (node["attempts"], node["attempts_since_retry"]) == (5, 2)
    assert len(node["attempt_history"]) == 5  # the history keeps every attempt
    assert run_status(run)["nodes"]["b"]["attempts_since_retry"] == 0  # never dispatched


def test_duration_counts_active_time_not_the_idle_gap_before_a_retry() -> None:
    spec = _spec()
    run = _failed_for_good(spec, NOW)  # failed at NOW + 3
    assert run_status(run)["duration_s"] == 3.0
    assert run_status(run)["resumed_at"] is None

    advance(spec, run, RunRetryRequested(run_id=RUN), NOW + 3600)  # an hour later
    running = run_status(run)
    assert running["resumed_at"] == NOW + 3600
    assert running["duration_s"] == 3.0  # while it runs: up to its last applied event
    advance(spec, run, completed("a", attempt=4), NOW + 3602)
    advance(spec, run, completed("b"), NOW + 3605)

    final = run_status(run)
    assert final["status"] == RunStatus.SUCCEEDED
    assert final["duration_s"] == 3.0 + 5.0
    assert run.nodes["b"].status == NodeStatus.SUCCEEDED


def test_a_second_retry_adds_a_third_span() -> None:
    spec = _spec()
    run = _failed_for_good(spec, NOW)
    advance(spec, run, RunRetryRequested(run_id=RUN), NOW + 100)
    for attempt, at in ((4, 101), (5, 102), (6, 103)):
        out = advance(spec, run, failed("a", attempt=attempt), NOW + at)
        for timer in timers_of(out, "retry"):
            advance(spec, run, fired(timer), NOW + at)
    assert run.status == RunStatus.FAILED
    assert run_status(run)["duration_s"] == 3.0 + 3.0

    advance(spec, run, RunRetryRequested(run_id=RUN), NOW + 500)
    advance(spec, run, completed("a", attempt=7), NOW + 501)
    advance(spec, run, completed("b"), NOW + 502)
    assert run_status(run)["duration_s"] == 3.0 + 3.0 + 2.0


def test_a_stored_run_from_before_resumes_were_recorded_reads_as_one_span() -> None:
    spec = _spec()
    run = _failed_for_good(spec, NOW)
    header = run.header_dict()
    del header["resumed_at"], header["earlier_active_s"]
    old = RunState.from_parts(header, list(run.nodes.values()))
    assert run_status(old)["duration_s"] == 3.0
