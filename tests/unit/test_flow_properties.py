"""Flow control holds in every delivery order the system can produce (docs/flow-control.md).

Many runs, their limiters and workers are simulated by `tests/unit/flow_world.py`; hypothesis
picks which deliverable event goes next, when a run is cancelled, which attempts fail, and
replays events already applied (redeliveries, re-published outbox rows). After every event:

- no limiter holds more than its limit, and every slot a run believes it holds is held;
- runs running per key, and attempts out with workers per key, never exceed their limits.

And once nothing is left to deliver: every run ended (every queued run and task started once
those ahead finished), every slot came back (no leak, cancellations included), nothing queues.
Priorities: under a backlog, grants follow priority (then arrival), and a request is passed
only by requests that arrived less than 9 aging steps after it.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from events.models import LimitReleased, LimitRequested
from orchestrator.core.compiler import compile_spec
from orchestrator.core.limits import PRIORITY_AGING_S, apply_limiter
from orchestrator.core.statuses import RunStatus
from tests.unit.flow_world import World, used_grants

RUN_LIMIT = 2
TASK_LIMIT = 1
MAP_LIMIT = 2
KEYS = ("x", "y")

# A run per customer key at most RUN_LIMIT at a time; its `charge` task at most TASK_LIMIT at a
# time per account across all runs; then a map over the run's items, two children at a time,
# each child asking a task-wide limit of its own.
LIMITED = compile_spec(
    {
        "name": "limited",
        "concurrency": {"limit": RUN_LIMIT, "key": "$.input.k"},
        "nodes": [
            {
                "id": "charge",
                "task": "charge",
                "inputs": {"account": "$.input.k"},
                "concurrency": {"limit": TASK_LIMIT, "key": "$.input.account"},
                "retry": {"max_attempts": 3, "backoff_s": 1.0},
            },
            {
                "id": "each",
                "task": "ship",
                "depends_on": ["charge"],
                "map": {"over": "$.input.items", "param": "item", "max_parallel": MAP_LIMIT},
                "concurrency": 3,
                "retry": {"max_attempts": 2},
            },
        ],
        "output": "$.nodes.each",
    }
)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    world = World(LIMITED)
    runs = draw(st.integers(1, 6), label="runs")
    for n in range(runs):
        run_id = f"run-{n}"
        key = draw(st.sampled_from(KEYS), label=f"key {n}")
        items = draw(st.integers(0, 3), label=f"items {n}")
        priority = draw(st.none() | st.integers(1, 10), label=f"priority {n}")
        world.request(run_id, {"k": key, "items": list(range(items))}, priority)
        for node in ["charge", *(f"each[{i}]" for i in range(items))]:
            if draw(st.booleans(), label=f"{run_id} {node} fails once"):
                world.fails[(run_id, node, 1)] = True
    return world


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    world=worlds(),
    cancels=st.integers(0, 2),
    replays=st.integers(0, 10),
    # The delivery order: a hypothesis-controlled generator (one draw per event would spend the
    # time budget on drawing; this one still shrinks to simpler orders).
    order=st.randoms(use_true_random=False),
)
def test_limits_hold_in_every_order_and_every_queued_run_finishes(
    world: World, cancels: int, replays: int, order: random.Random
) -> None:
    issued = cancels
    while world.pending:
        moves = ["next"] * 8
        if cancels and world.runs:
            moves.append("cancel")
        if replays and world.delivered:
            moves.append("replay")
        move = order.choice(moves)
        if move == "cancel":
            cancels -= 1
            world.cancel(order.choice(sorted(world.runs)))
            continue
        if move == "replay":
            replays -= 1
            world.redeliver(order.randrange(len(world.delivered)))
            continue
        ready = world.deliverable()
        world.deliver(order.choice(ready))
        assert all(n <= RUN_LIMIT for n in world.runs_by_key().values())
        assert all(n <= TASK_LIMIT for n in world.running_by_key("charge").values())
        for run in world.runs.values():
            each = run.nodes.get("each")
            if each is not None and each.children:
                assert each.children_active <= MAP_LIMIT
    world.settled()
    statuses = [r.status for r in world.runs.values()]
    event(f"cancelled: {statuses.count(RunStatus.CANCELLED)}")
    event(f"longest queue: {min(world.most_waiting, 3)}{'+' if world.most_waiting > 3 else ''}")
    if issued == cancels:  # none was used: every run ran to its end and succeeded
        assert set(statuses) == {RunStatus.SUCCEEDED}
    assert len(world.dispatched) == len(set(world.dispatched))


# ---- rate limits -------------------------------------------------------------------------------

RATE, PER_S = 3, 1.0
RATED = compile_spec(
    {
        "name": "rated",
        "nodes": [
            {
                "id": "call",
                "task": "call",
                "inputs": {"api_key": "$.input.k"},
                "rate_limit": {"limit": RATE, "per": PER_S, "key": "$.input.api_key"},
                "concurrency": 2,
                "retry": {"max_attempts": 2, "backoff_s": 0.1},
            }
        ],
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(st.tuples(st.sampled_from(KEYS), st.booleans()), min_size=1, max_size=10),
    cancels=st.integers(0, 2),
    order=st.randoms(use_true_random=False),
)
def test_a_rate_limit_admits_at_most_its_limit_in_any_window_and_everything_in_the_end(
    runs: list[tuple[str, bool]], cancels: int, order: random.Random
) -> None:
    """Attempts over the rate wait (durably: a timer) rather than fail; the clock moves on at
    random; in no window of PER_S seconds are more than RATE attempts granted per key."""
    world = World(RATED)
    for n, (key, flaky) in enumerate(runs):
        world.request(f"run-{n}", {"k": key})
        world.fails[(f"run-{n}", "call", 1)] = flaky
    while world.pending:
        ready = world.deliverable()
        if not ready or order.random() > 0.8:  # (a simplest draw, 0, always delivers)
            world.now += order.choice([0.05, 0.3, 0.7, 1.0])
            continue
        if cancels and world.runs and order.random() > 0.95:
            cancels -= 1
            world.cancel(order.choice(sorted(world.runs)))
            continue
        world.deliver(order.choice(ready))
    world.settled()
    # The tokens used, by key: no window holds more than RATE. (Not counted: a token granted to
    # a run cancelled meanwhile, which gives it back unused.) The attempts go out when their run
    # applies the grant, a delivery later: the bound is on the grants, the dispatches follow
    # them by one hop.
    dispatched = sum(1 for _ in world.dispatch_log)
    used = 0
    for entity, limiter in world.limiters.items():
        if limiter.per_s is None:
            continue
        times = used_grants(world, entity)
        used += len(times)
        for i, start in enumerate(times):
            in_window = [t for t in times[i:] if t < start + PER_S]
            assert len(in_window) <= RATE, (limiter.key, times)
    assert used == dispatched


# ---- priorities -------------------------------------------------------------------------------


def _request(n: int, priority: int) -> LimitRequested:
    return LimitRequested(
        limiter="L",
        request=f"r{n}",
        scope="task",
        name="t",
        limit=1,
        priority=priority,
        run_id=f"run-{n}",
        node_id="a",
        attempt=1,
    )


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.integers(1, 10), st.floats(0, 20 * PRIORITY_AGING_S)), min_size=1, max_size=12
    )
)
def test_under_a_backlog_grants_follow_priority_and_nothing_starves(
    arrivals: list[tuple[int, float]],
) -> None:
    """One slot, held; requests arrive (priority, time) in time order; then the slot is handed
    on release after release. The order of grants is priority with aging: a request goes before
    every request of the same or lower priority that arrived after it, and is passed only by
    requests that arrived less than 9 aging steps after it."""
    arrivals = sorted(arrivals, key=lambda a: a[1])
    limiter = apply_limiter(None, _request(-1, 5), 0.0).entity  # the holder
    for n, (priority, at) in enumerate(arrivals):
        apply_limiter(limiter, _request(n, priority), at)
    assert limiter.waiting == len(arrivals)
    order: list[int] = []
    holder = "r-1"
    now = arrivals[-1][1] + 1
    while limiter.waiting or limiter.holding:
        out = apply_limiter(limiter, LimitReleased(limiter="L", request=holder, run_id="x"), now)
        granted = [c.data.request for c in out.commands]  # type: ignore[attr-defined]
        if not granted:
            break
        holder = granted[0]
        order.append(int(holder[1:]))
    assert sorted(order) == list(range(len(arrivals)))
    for position, n in enumerate(order):
        priority, at = arrivals[n]
        for m in order[position + 1 :]:
            other_priority, other_at = arrivals[m]
            if other_priority <= priority and other_at >= at:
                continue  # as expected: after it
            # m goes after n although m has the higher priority or arrived first: aging.
            assert (at - priority * PRIORITY_AGING_S, n) < (
                other_at - other_priority * PRIORITY_AGING_S,
                m,
            )
        for m in order[:position]:
            other_priority, other_at = arrivals[m]
            if other_at > at:
                assert other_at - at < 9 * PRIORITY_AGING_S, "passed by a far later request"


def test_with_no_waiting_the_order_is_priority_then_arrival() -> None:
    limiter = apply_limiter(None, _request(-1, 5), 0.0).entity
    for n, priority in enumerate([1, 10, 5, 10, 1]):
        apply_limiter(limiter, _request(n, priority), 0.0)
    order = []
    holder = "r-1"
    while True:
        out = apply_limiter(limiter, LimitReleased(limiter="L", request=holder, run_id="x"), 0.0)
        if not out.commands:
            break
        holder = out.commands[0].data.request  # type: ignore[attr-defined]
        order.append(holder)
    assert order == ["r1", "r3", "r2", "r0", "r4"]
