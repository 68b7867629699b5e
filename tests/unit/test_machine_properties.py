"""Every delivery order the system can really produce gives the same final state.

A small deterministic simulator stands in for the bus, the workers and the timer wheel. It
keeps a pool of deliverable events, generated only from the machine's own commands:

- a Dispatch yields a TaskStarted and a result (TaskCompleted, or a retryable TaskFailed, per
  an outcome table hypothesis draws for each (node key, attempt)). Both are deliverable at
  once: the started event may be late or arrive after the result;
- a StartTimer yields its TimerFired; a CancelTimer withdraws it if it has not fired yet;
- an attempt that failed may also have a late, stale completion (a worker thought dead that
  finished after all), deliverable only once the next attempt has been dispatched;
- any event already applied may be delivered again (a redelivery).

Hypothesis picks which deliverable event goes next. The final state must equal the one the
in-order run (first in, first out; no duplicates; no stale results) reaches, and every
duplicate or stale delivery must change nothing at all.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from events.models import RunRequested, TaskCompleted
from orchestrator.core.commands import CancelTimer, Dispatch, StartTimer
from orchestrator.core.compiler import CompiledSpec, compile_spec
from orchestrator.core.machine import RunEvent, advance, start_run
from orchestrator.core.state import RunState, Transition
from orchestrator.core.statuses import RUN_TERMINAL, NodeStatus, RunStatus
from tests.unit.machine_support import completed, failed, fired, started, summary

RUN = "run-1"
NOW = 1_000.0  # one clock reading for every event: timestamps cannot differ between orders
MAX_ITEMS = 3


def _spec(nodes: list[dict[str, Any]], output: Any) -> CompiledSpec:
    return compile_spec({"name": "prop", "nodes": nodes, "output": output})


R3 = {"max_attempts": 3, "backoff_s": 1.0, "jitter": 0.5}
R2 = {"max_attempts": 2, "backoff_s": 0.5}

# src -> (left, right, gate?) ; left -> fan (map over the run's items) ; fan + right -> join
DIAMOND_MAP = _spec(
    [
        {"id": "src", "task": "t", "inputs": {"n": "$.input.n"}, "retry": R3},
        {"id": "left", "task": "t", "inputs": {"v": "$.nodes.src.n"}, "retry": R2},
        {"id": "right", "task": "t", "inputs": {"v": "$.nodes.src"}, "retry": R3},
        {
            "id": "gate",
            "task": "t",
            "inputs": {"v": "$.nodes.src.n"},
            "when": {"value": "$.input.n", "op": "gt", "operand": 1},
        },
        {
            "id": "fan",
            "task": "t",
            "inputs": {"k": "$.nodes.left.n"},
            "map": {"over": "$.input.items", "param": "item"},
            "retry": R3,
        },
        {"id": "join", "task": "t", "inputs": {"l": "$.nodes.fan", "r": "$.nodes.right"}},
    ],
    {"join": "$.nodes.join", "fan": "$.nodes.fan", "gate": "$.nodes.gate"},
)

# Two roots; a map over a node's output; two fan-ins of it; a final join of everything.
TWO_ROOTS = _spec(
    [
        {"id": "a", "task": "t", "inputs": {"n": "$.input.n"}, "retry": R2},
        {"id": "b", "task": "t", "retry": R3},
        {
            "id": "each",
            "task": "t",
            "map": {"over": "$.nodes.a.items", "param": "x"},
            "inputs": {"b": "$.nodes.b.n"},
            "retry": R2,
        },
        {"id": "count", "task": "t", "inputs": {"all": "$.nodes.each"}, "retry": R3},
        {"id": "echo", "task": "t", "inputs": {"all": "$.nodes.each", "a": "$.nodes.a.n"}},
        {"id": "end", "task": "t", "depends_on": ["count", "echo", "b"], "retry": R2},
    ],
    {"count": "$.nodes.count", "end": "$.nodes.end", "each": "$.nodes.each"},
)

SPECS = {"diamond_map": DIAMOND_MAP, "two_roots": TWO_ROOTS}


def _keys(spec: CompiledSpec) -> list[str]:
    """Every node key a run of `spec` can have: node ids, and up to MAX_ITEMS children."""
    keys = []
    for node_id, node in spec.nodes.items():
        keys.append(node_id)
        if node.spec.map is not None:
            keys += [f"{node_id}[{i}]" for i in range(MAX_ITEMS)]
    return keys


def _max_attempts(spec: CompiledSpec, key: str) -> int:
    return spec.nodes[key.split("[")[0]].spec.retry.max_attempts


def _output(key: str, attempt: int, node_input: Any) -> Any:
    """What the worker returns: derived from the input, so upstream outputs flow downstream."""
    n = node_input.get("n", 0) if isinstance(node_input, dict) else 0
    size = n % (MAX_ITEMS + 1)  # a map over `items` gets 0..3 children
    return {"n": len(str(node_input)) % 7, "items": list(range(size)), "of": key}


@dataclass
class Scenario:
    spec: CompiledSpec = field(repr=False)
    run_input: dict[str, Any]
    failures: dict[str, int]  # node key -> how many of its first attempts fail
    name: str = ""  # which of SPECS, for a readable falsifying example


@dataclass
class Sim:
    """The world outside the machine: what can be delivered next, and what was delivered."""

    scenario: Scenario
    run: RunState | None = None
    pending: list[RunEvent] = field(default_factory=list)
    late: list[RunEvent] = field(default_factory=list)  # stale results, once deliverable
    delivered: list[RunEvent] = field(default_factory=list)
    dispatched: list[tuple[str, int]] = field(default_factory=list)
    stale_later: dict[tuple[str, int], RunEvent] = field(default_factory=dict)

    def start(self) -> None:
        request = RunRequested(workflow="prop", input=self.scenario.run_input)
        self.absorb(start_run(self.scenario.spec, RUN, request, NOW))

    def absorb(self, transition: Transition) -> None:
        self.run = transition.run
        for command in transition.commands:
            if isinstance(command, Dispatch):
                self.on_dispatch(command)
            elif isinstance(command, StartTimer):
                self.pending.append(fired(command))
            elif isinstance(command, CancelTimer):
                self.pending = [
                    e for e in self.pending if getattr(e, "timer_id", None) != command.timer_id
                ]

    def on_dispatch(self, d: Dispatch) -> None:
        ref = (d.node_key, d.attempt)
        assert ref not in self.dispatched, f"{ref} dispatched twice"
        self.dispatched.append(ref)
        # The previous attempt's stale completion can arrive from now on.
        if (d.node_key, d.attempt - 1) in self.stale_later:
            self.late.append(self.stale_later.pop((d.node_key, d.attempt - 1)))
        self.pending.append(started(d.node_key, d.attempt))
        if d.attempt <= self.scenario.failures.get(d.node_key, 0):
            self.pending.append(
                failed(d.node_key, d.attempt, message=f"attempt {d.attempt} of {d.node_key}")
            )
            self.stale_later[ref] = completed(d.node_key, "stale!", d.attempt)
        else:
            self.pending.append(
                completed(d.node_key, _output(d.node_key, d.attempt, d.input), d.attempt)
            )

    def deliver(self, event: RunEvent) -> Transition:
        assert self.run is not None
        transition = advance(self.scenario.spec, self.run, event, NOW)
        self.delivered.append(event)
        self.absorb(transition)
        return transition

    def redeliver(self, event: RunEvent) -> None:
        """A duplicate or a stale result: must change nothing."""
        assert self.run is not None
        before = copy.deepcopy(self.run)
        transition = advance(self.scenario.spec, self.run, event, NOW)
        assert not transition.applied, event
        assert transition.commands == [], event
        assert transition.changed == set(), event
        assert self.run == before, event


def in_order(scenario: Scenario) -> Sim:
    sim = Sim(scenario)
    sim.start()
    while sim.pending:
        sim.deliver(sim.pending.pop(0))
    return sim


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    name = draw(st.sampled_from(sorted(SPECS)))
    spec = SPECS[name]
    keys = _keys(spec)
    # Mostly every node gets there in the end, after 0..max-1 failed attempts; sometimes one
    # node exhausts its attempts, so the run fails (deterministically: only one node can).
    failures = {key: draw(st.integers(0, _max_attempts(spec, key) - 1), label=key) for key in keys}
    doomed = draw(st.none() | st.sampled_from(keys), label="doomed")
    if doomed is not None:
        failures[doomed] = _max_attempts(spec, doomed)
    items = draw(st.lists(st.integers(0, 9), max_size=MAX_ITEMS), label="items")
    run_input = {"n": draw(st.integers(0, 3), label="n"), "items": items}
    return Scenario(spec, run_input, failures, name)


def _final(sim: Sim) -> dict[str, Any]:
    """The parts of the final state that must not depend on the order.

    When the run failed, the other branches' nodes legitimately differ (a branch may have
    finished before the failure or been cancelled by it): only the run's outcome and the
    failing node are compared then."""
    assert sim.run is not None
    full = summary(sim.run)
    if sim.run.status != RunStatus.FAILED:
        return full
    assert sim.run.error is not None
    failing = sim.run.error["node_id"]
    return {
        "status": full["status"],
        "error": full["error"],
        "failing": full["nodes"][failing],
    }


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenario=scenarios(), data=st.data())
def test_any_real_delivery_order_reaches_the_in_order_final_state(
    scenario: Scenario, data: st.DataObject
) -> None:
    reference = in_order(scenario)
    assert reference.run is not None
    assert reference.run.status in RUN_TERMINAL

    sim = Sim(scenario)
    sim.start()
    extras = data.draw(st.integers(0, 12), label="extra deliveries")
    moved = {"duplicate": 0, "stale": 0}
    while sim.pending or (extras and (sim.delivered or sim.late)):
        moves = []
        if sim.pending:
            moves.append("next")
        if extras and sim.delivered:
            moves.append("duplicate")
        if extras and sim.late:
            moves.append("stale")
        move = data.draw(st.sampled_from(moves), label="move")
        if move == "next":
            index = data.draw(st.integers(0, len(sim.pending) - 1), label="which")
            sim.deliver(sim.pending.pop(index))
            continue
        extras -= 1
        moved[move] += 1
        pool = sim.delivered if move == "duplicate" else sim.late
        again = pool[data.draw(st.integers(0, len(pool) - 1), label=move)]
        if move == "stale":
            sim.late.remove(again)
            assert isinstance(again, TaskCompleted)
        sim.redeliver(again)

    assert sim.run is not None
    assert sim.run.status in RUN_TERMINAL
    event(f"run {sim.run.status}")
    event(f"duplicates: {min(moved['duplicate'], 2)}+, stale results: {min(moved['stale'], 2)}+")
    event(f"retried: {any(attempt > 1 for _, attempt in sim.dispatched)}")
    event(f"mapped children: {sum('[' in key for key in sim.run.nodes)}")
    assert _final(sim) == _final(reference)
    if sim.run.status == RunStatus.SUCCEEDED:
        assert sorted(sim.dispatched) == sorted(reference.dispatched)


def test_the_simulator_covers_what_the_property_claims() -> None:
    """The in-order reference itself: a retry, a stale result waiting, fan-out and fan-in."""
    scenario = Scenario(DIAMOND_MAP, {"n": 2, "items": [5, 6]}, {"src": 1, "fan[1]": 2, "right": 0})
    sim = in_order(scenario)
    assert sim.run is not None
    assert sim.run.status == RunStatus.SUCCEEDED
    assert ("src", 2) in sim.dispatched and ("fan[1]", 3) in sim.dispatched
    assert len(sim.late) == 3  # src#1, fan[1]#1 and fan[1]#2 each have a late completion
    assert sim.run.nodes["fan"].output == [
        _output("fan[0]", 1, sim.run.nodes["fan[0]"].input),
        _output("fan[1]", 3, sim.run.nodes["fan[1]"].input),
    ]
    assert sim.run.output["join"] == sim.run.nodes["join"].output
    assert sim.run.nodes["gate"].status == NodeStatus.SUCCEEDED
