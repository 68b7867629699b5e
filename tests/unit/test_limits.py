"""Limiters and collectors (core/limits.py, core/collect.py), event by event."""

from __future__ import annotations

from typing import Any

from events.models import (
    LIMIT_GRANTED,
    LIMIT_REFUSED,
    RUN_CANCEL_REQUESTED,
    RUN_REQUESTED,
    FlowTimerFired,
    LimitReleased,
    LimitRequested,
    RunRequested,
    TriggerCollected,
)
from orchestrator.core.collect import Collector, apply_collector, collected_run_id
from orchestrator.core.commands import CancelTimer, Emit
from orchestrator.core.limits import FlowTransition, Limiter, apply_limiter, position

T0 = 1_000.0


def ask(n: int, *, limit: int = 2, per_s: float | None = None, **extra: Any) -> LimitRequested:
    return LimitRequested(
        limiter="L",
        request=f"r{n}",
        scope="rate" if per_s else "run",
        name="wf",
        key="acme",
        limit=limit,
        per_s=per_s,
        run_id=f"run-{n}",
        **extra,
    )


def release(n: int) -> LimitReleased:
    return LimitReleased(limiter="L", request=f"r{n}", run_id=f"run-{n}")


def emitted(out: FlowTransition, event_type: str) -> list[Any]:
    return [c.data for c in out.commands if isinstance(c, Emit) and c.event_type == event_type]


def granted(out: FlowTransition) -> list[str]:
    return [g.request for g in emitted(out, LIMIT_GRANTED)]


def test_grants_up_to_the_limit_then_queues_and_hands_on_at_each_release() -> None:
    out = apply_limiter(None, ask(0), T0)
    limiter: Limiter = out.entity
    assert out.created and granted(out) == ["r0"]
    assert granted(apply_limiter(limiter, ask(1), T0)) == ["r1"]
    assert granted(apply_limiter(limiter, ask(2), T0)) == []
    assert granted(apply_limiter(limiter, ask(3), T0)) == []
    assert (limiter.holding, limiter.waiting) == (2, 2)
    assert position(limiter, "r2") == 1 and position(limiter, "r3") == 2
    assert granted(apply_limiter(limiter, release(0), T0 + 1)) == ["r2"]
    assert granted(apply_limiter(limiter, release(2), T0 + 2)) == ["r3"]
    for n in (1, 3):
        apply_limiter(limiter, release(n), T0 + 3)
    assert (limiter.holding, limiter.waiting, limiter.entries) == (0, 0, {})


def test_a_release_of_an_unknown_request_changes_nothing() -> None:
    limiter = apply_limiter(None, ask(0), T0).entity
    assert apply_limiter(limiter, release(7), T0).applied is False
    assert apply_limiter(None, release(7), T0).applied is False


def test_the_latest_request_carries_the_limit_in_force() -> None:
    limiter = apply_limiter(None, ask(0, limit=1), T0).entity
    apply_limiter(limiter, ask(1, limit=1), T0)
    assert limiter.waiting == 1
    out = apply_limiter(limiter, ask(2, limit=3), T0)  # a new version raised the limit
    assert sorted(granted(out)) == ["r1", "r2"] and limiter.holding == 3


def test_cancel_newest_refuses_when_full_and_cancel_oldest_evicts_without_exceeding() -> None:
    limiter = apply_limiter(None, ask(0, limit=1, on_limit="cancel_newest"), T0).entity
    out = apply_limiter(limiter, ask(1, limit=1, on_limit="cancel_newest"), T0)
    [refusal] = emitted(out, LIMIT_REFUSED)
    assert refusal.run_id == "run-1" and "cancel_newest" in refusal.reason
    assert "r1" not in limiter.entries

    limiter = apply_limiter(None, ask(0, limit=1, on_limit="cancel_oldest"), T0).entity
    out = apply_limiter(limiter, ask(1, limit=1, on_limit="cancel_oldest"), T0 + 1)
    [evicted] = emitted(out, RUN_CANCEL_REQUESTED)
    assert evicted.run_id == "run-0" and "run-1" in evicted.reason
    assert granted(out) == [] and limiter.holding == 1  # not until run-0 has let go
    # A third comes while run-0 is still stopping: nobody else to evict, it just queues.
    out = apply_limiter(limiter, ask(2, limit=1, on_limit="cancel_oldest"), T0 + 2)
    assert emitted(out, RUN_CANCEL_REQUESTED) == []
    assert granted(apply_limiter(limiter, release(0), T0 + 3)) == ["r1"]


def wake_ups(out: FlowTransition) -> list[float]:
    return [c.due_at for c in out.commands if isinstance(c, Emit) and c.due_at is not None]


def tick(limiter: Limiter, now: float) -> FlowTransition:
    """The limiter's pending timer fires, its event stored in the stream at `now`."""
    assert limiter.timer is not None
    return apply_limiter(limiter, FlowTimerFired(entity="L", timer_id=limiter.timer), now)


def test_a_rate_limit_is_a_sliding_window_with_a_durable_wake_up() -> None:
    out = apply_limiter(None, ask(0, limit=2, per_s=1.0), T0)
    limiter = out.entity
    assert granted(out) == [] and wake_ups(out) == [T0]  # it admits on its own timer only
    assert granted(tick(limiter, T0 + 0.001)) == ["r0"]
    assert granted(apply_limiter(limiter, ask(1, limit=2, per_s=1.0), T0 + 0.25)) == []
    assert granted(tick(limiter, T0 + 0.25)) == ["r1"]
    apply_limiter(limiter, ask(2, limit=2, per_s=1.0), T0 + 0.5)
    out = tick(limiter, T0 + 0.5)
    assert granted(out) == []
    assert wake_ups(out) == [T0 + 1.001]  # when the first grant leaves the window
    assert limiter.timer is not None and limiter.timer.startswith("L:timer:")
    # Another waiter: the wake-up already pending comes back here (the window frees no sooner).
    out = apply_limiter(limiter, ask(3, limit=2, per_s=1.0), T0 + 0.6)
    assert out.commands == []
    fired = FlowTimerFired(entity="L", timer_id=limiter.timer)
    out = apply_limiter(limiter, fired, T0 + 1.001)
    assert granted(out) == ["r2"]
    assert wake_ups(out) == [T0 + 1.25]
    # A stale timer (an earlier one) finds no room and changes nothing but the clock.
    assert granted(apply_limiter(limiter, fired, T0 + 1.1)) == []
    out = apply_limiter(limiter, release(1), T0 + 1.1)  # a token given back: wake at once
    assert wake_ups(out) == [T0 + 1.1]
    assert granted(tick(limiter, T0 + 1.1)) == ["r3"]


def test_requests_applied_late_are_admitted_at_the_rate_not_in_a_burst() -> None:
    """Requests that piled up while the limiter's partition was down (or taken over) carry
    their times in the stream, spread over the outage: admitted by those times, every one would
    find room at once. The limiter admits on its timer, whose event is stored when it fires."""
    limiter = None
    for n in range(10):  # asked over 4.5 s of an outage, applied once it is over
        out = apply_limiter(limiter, ask(n, limit=2, per_s=1.0), T0 + n * 0.5)
        limiter = out.entity
        assert granted(out) == []
    assert limiter is not None
    out = tick(limiter, T0 + 60.0)  # the shell fires the wake-up when the partition is back
    assert granted(out) == ["r0", "r1"]
    assert wake_ups(out) == [T0 + 61.0]


def test_a_rate_timer_applied_before_its_due_time_admits_as_if_at_it() -> None:
    """The shell fires a timer by its own clock; the event's time in the stream may be a little
    behind. The window it waited for has moved on all the same: no second timer for it."""
    limiter = apply_limiter(None, ask(0, limit=1, per_s=1.0), T0).entity
    tick(limiter, T0)
    apply_limiter(limiter, ask(1, limit=1, per_s=1.0), T0 + 0.1)
    [due] = wake_ups(tick(limiter, T0 + 0.1))
    out = tick(limiter, T0 + 0.98)  # 20 ms before it is due, by this clock
    assert granted(out) == ["r1"]
    assert limiter.entries["r1"].granted_at == due == T0 + 1.0


# ---- collectors -------------------------------------------------------------------------------


def collected(n: int, mode: str = "batch", **settings: Any) -> TriggerCollected:
    return TriggerCollected(
        collector="C",
        workflow="wf",
        mode=mode,  # type: ignore[arg-type]
        key="k",
        event={"id": f"e{n}", "data": n},
        **settings,
    )


def runs(out: FlowTransition) -> list[RunRequested]:
    return emitted(out, RUN_REQUESTED)


def test_batching_starts_a_run_per_max_size_and_the_rest_after_max_wait() -> None:
    settings = {"max_size": 3, "max_wait_s": 5.0}
    out = apply_collector(None, collected(0, **settings), T0)
    collector: Collector = out.entity
    [timer] = [c for c in out.commands if isinstance(c, Emit)]
    assert timer.due_at == T0 + 5.0
    started = []
    for n in range(1, 7):
        started += runs(apply_collector(collector, collected(n, **settings), T0 + n))
    assert [r.input["count"] for r in started] == [3, 3]
    assert [e["data"] for e in started[0].input["events"]] == [0, 1, 2]
    assert started[0].run_id == collected_run_id("C", 0)
    assert started[1].run_id == collected_run_id("C", 1)
    assert collector.count == 1  # event 6 waits for its window
    pending = collector.timer
    assert pending is not None
    out = apply_collector(collector, FlowTimerFired(entity="C", timer_id=pending), T0 + 11)
    [last] = runs(out)
    assert last.input == {"events": [{"id": "e6", "data": 6}], "count": 1}
    assert collector.entries == {} and collector.generation == 3


def test_debounce_restarts_its_window_and_starts_one_run_with_the_last_event() -> None:
    settings = {"period_s": 2.0}
    out = apply_collector(None, collected(0, "debounce", **settings), T0)
    collector: Collector = out.entity
    first_timer = collector.timer
    assert first_timer is not None
    out = apply_collector(collector, collected(1, "debounce", **settings), T0 + 1)
    assert CancelTimer(first_timer) in out.commands  # the window moved on
    stale = apply_collector(collector, FlowTimerFired(entity="C", timer_id=first_timer), T0 + 2)
    assert stale.applied is False and runs(stale) == []
    assert collector.timer is not None
    out = apply_collector(collector, FlowTimerFired(entity="C", timer_id=collector.timer), T0 + 3)
    [run] = runs(out)
    assert run.input == {"event": {"id": "e1", "data": 1}, "count": 2}
