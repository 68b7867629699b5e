"""A deterministic world of many runs and their limiters, for flow-control properties.

It stands in for the bus, the engines of every partition, the workers and the timer wheel:
- runs and limiters are advanced by the pure machines (`advance`, `apply_limiter`), each event
  applied at most once by its id — what the engine's processed-id check does — so a redelivery
  or a re-publish of an outbox row changes nothing;
- an event is deliverable once the transition that produced it was applied (causal order is
  the only order the bus guarantees across partitions); which one goes next is the caller's
  choice (hypothesis draws it);
- a dispatched attempt yields a start and a result (a retryable failure for the attempts the
  scenario says fail);
- timers: a run's timers are deliverable at once (time does not matter to them here), a
  limiter's at their due time on the world's clock, which the caller moves on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from events.models import (
    ErrorInfo,
    FlowTimerFired,
    LimitGranted,
    LimitRefused,
    LimitReleased,
    LimitRequested,
    RunCancelRequested,
    RunRequested,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    WireModel,
)
from events.topology import ORCHESTRATOR_INPUTS
from orchestrator.core.commands import CancelTimer, Command, Dispatch, Emit, StartTimer
from orchestrator.core.compiler import CompiledSpec
from orchestrator.core.limits import Limiter, apply_limiter
from orchestrator.core.machine import advance, start_run
from orchestrator.core.state import RunState
from orchestrator.core.statuses import IN_FLIGHT, RUN_TERMINAL, RunStatus
from tests.unit.machine_support import fired

LIMITER_EVENTS = (LimitRequested, LimitReleased, FlowTimerFired)


@dataclass
class Pending:
    event_id: str
    event: WireModel
    due: float = 0.0  # a limiter's timer: not before


@dataclass
class World:
    spec: CompiledSpec
    fails: dict[tuple[str, str, int], bool] = field(default_factory=dict)  # (run, node, attempt)
    now: float = 1_000.0
    runs: dict[str, RunState] = field(default_factory=dict)
    limiters: dict[str, Limiter] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    processed: set[str] = field(default_factory=set)
    delivered: list[Pending] = field(default_factory=list)
    dispatched: list[tuple[str, str, int]] = field(default_factory=list)
    dispatch_log: list[tuple[float, Any]] = field(default_factory=list)  # (when, task input)
    granted: list[tuple[str, str]] = field(default_factory=list)  # (limiter, request) in order
    grant_times: dict[str, dict[str, float]] = field(default_factory=dict)  # limiter -> grants
    most_waiting: int = 0  # the longest queue seen

    # ---- driving -------------------------------------------------------------------------
    def request(self, run_id: str, run_input: dict[str, Any], priority: int | None = None) -> None:
        event = RunRequested(
            workflow=self.spec.name, input=run_input, priority=priority, run_id=run_id
        )
        self.pending.append(Pending(f"{run_id}:requested", event))

    def deliverable(self) -> list[int]:
        return [i for i, p in enumerate(self.pending) if p.due <= self.now]

    def deliver(self, index: int) -> None:
        item = self.pending.pop(index)
        self.apply(item)

    def redeliver(self, index: int) -> None:
        """An event delivered again (a redelivery, a re-published outbox row): dropped."""
        self.apply(self.delivered[index])

    def cancel(self, run_id: str, reason: str = "by the test") -> None:
        event = RunCancelRequested(run_id=run_id, reason=reason)
        self.pending.append(Pending(f"{run_id}:cancel:{len(self.delivered)}", event))

    def run_to_quiescence(self, max_steps: int = 100_000) -> None:
        """Deliver first in, first out, moving the clock to the next timer when only timers wait."""
        for _ in range(max_steps):
            ready = self.deliverable()
            if ready:
                self.deliver(ready[0])
            elif self.pending:
                self.now = min(p.due for p in self.pending)
            else:
                return
        raise AssertionError("the world did not settle")

    # ---- the engines ---------------------------------------------------------------------
    def apply(self, item: Pending) -> None:
        if item.event_id in self.processed:
            return  # the processed-id check
        self.processed.add(item.event_id)
        self.delivered.append(item)
        event = item.event
        if isinstance(event, LIMITER_EVENTS):
            self._apply_limiter(event)
        elif isinstance(event, RunRequested):
            run_id = event.run_id or ""
            transition = start_run(self.spec, run_id, event, self.now)
            assert transition.run is not None
            self.runs[run_id] = transition.run
            self.absorb(run_id, transition.commands)
        else:
            run = self.runs[getattr(event, "run_id")]  # noqa: B009
            transition = advance(self.spec, run, event, self.now)  # type: ignore[arg-type]
            self.absorb(run.run_id, transition.commands)
        self.check()

    def _apply_limiter(self, event: LimitRequested | LimitReleased | FlowTimerFired) -> None:
        entity = event.entity if isinstance(event, FlowTimerFired) else event.limiter
        transition = apply_limiter(self.limiters.get(entity), event, self.now)
        if transition.entity is not None:
            self.limiters[entity] = transition.entity
        for command in transition.commands:
            if isinstance(command, Emit) and isinstance(command.data, LimitGranted):
                self.granted.append((entity, command.data.request))
                self.grant_times.setdefault(entity, {})[command.data.request] = self.now
        self.absorb(entity, transition.commands)

    def absorb(self, owner: str, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Dispatch):
                self._worker(command)
            elif isinstance(command, StartTimer):
                self.pending.append(Pending(command.timer_id, fired(command)))
            elif isinstance(command, CancelTimer):
                self.pending = [p for p in self.pending if p.event_id != command.timer_id]
            elif isinstance(command, Emit) and command.event_type in ORCHESTRATOR_INPUTS:
                # (Run outcomes and task cancellations are for others: workers, subscribers.)
                due = command.due_at or 0.0
                self.pending.append(Pending(f"{command.run_id}:{command.key}", command.data, due))

    def _worker(self, d: Dispatch) -> None:
        ref = (d.run_id, d.node_key, d.attempt)
        assert ref not in self.dispatched, f"{ref} dispatched twice"
        self.dispatched.append(ref)
        self.dispatch_log.append((self.now, d.input))
        base = f"{d.run_id}:{d.node_key}:{d.attempt}"
        start = TaskStarted(run_id=d.run_id, node_id=d.node_key, attempt=d.attempt, worker="w")
        self.pending.append(Pending(f"{base}:started", start))
        if self.fails.get(ref):
            error = ErrorInfo(type="Flaky", message="once", retryable=True)
            result: WireModel = TaskFailed(
                run_id=d.run_id, node_id=d.node_key, attempt=d.attempt, worker="w", error=error
            )
        else:
            result = TaskCompleted(
                run_id=d.run_id, node_id=d.node_key, attempt=d.attempt, worker="w", output=d.input
            )
        self.pending.append(Pending(f"{base}:result", result))

    # ---- the invariants --------------------------------------------------------------------
    def check(self) -> None:
        """After every event: no limiter over its limit, its counts true to its entries, and
        every slot a run believes it holds held by the limiter."""
        held_by_limiters: set[tuple[str, str]] = set()
        for entity, lim in self.limiters.items():
            holding = [e for e in lim.entries.values() if e.holding]
            assert lim.holding == len(holding), entity
            assert lim.waiting == len(lim.entries) - len(holding), entity
            if lim.per_s is None:
                assert lim.holding <= lim.limit, f"{entity}: {lim.holding} > {lim.limit}"
            held_by_limiters.update((entity, e.request) for e in holding)
            self.most_waiting = max(self.most_waiting, lim.waiting)
        for run in self.runs.values():
            gates = [run.gate] if run.gate else []
            gates += [g for n in run.nodes.values() for g in n.gates]
            for gate in gates:
                if gate.state == "held":
                    assert (gate.limiter, gate.request) in held_by_limiters, gate

    def running_by_key(self, node_id: str) -> Counter[str]:
        """Attempts of `node_id` out with workers now, by the key of their concurrency gate."""
        counts: Counter[str] = Counter()
        for run in self.runs.values():
            for node in run.nodes.values():
                if node.node_id == node_id and node.status in IN_FLIGHT and node.gates:
                    counts[node.gates[0].key] += 1
        return counts

    def runs_by_key(self) -> Counter[str]:
        return Counter(
            r.gate.key for r in self.runs.values() if r.status == RunStatus.RUNNING and r.gate
        )

    def settled(self) -> None:
        """Nothing pending: every run ended, no limiter holds or queues anything."""
        assert not self.pending
        assert all(r.status in RUN_TERMINAL for r in self.runs.values()), {
            r.run_id: r.status for r in self.runs.values()
        }
        for entity, lim in self.limiters.items():
            if lim.per_s is None:
                assert lim.holding == 0, f"{entity} leaked {lim.holding} slot(s)"
            assert lim.waiting == 0, f"{entity} still queues {lim.waiting}"
        assert all(not r.abandoned for r in self.runs.values())


def refused(world: World) -> set[str]:
    return {p.event.run_id for p in world.delivered if isinstance(p.event, LimitRefused)}


def used_grants(world: World, entity: str) -> list[float]:
    """When `entity` granted the tokens that were used (a token given back was not)."""
    returned = {p.event.request for p in world.delivered if isinstance(p.event, LimitReleased)}
    grants = world.grant_times.get(entity, {})
    return sorted(t for request, t in grants.items() if request not in returned)
