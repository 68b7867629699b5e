"""A collector: debounce or batching of one event-triggered workflow for one key, as a pure state
machine (docs/flow-control.md).

    apply_collector(collector, event, now) -> FlowTransition

The trigger router hands every matching event of a debounced or batched workflow to the
collector of its (workflow, key) with a `trigger.collected` event; the collector lives on the
partition of its id and starts the runs:

- debounce: the event replaces the one held and the window restarts (`now + period`); when the
  window's timer fires with no newer event, one run starts with `{"event": <last>, "count": n}`;
- batching: the event is appended; the `max_size`-th starts a run at once with
  `{"events": [...], "count": n}`; otherwise the timer set at the batch's first event starts it
  `max_wait` seconds later with what is there.

Each run's id is derived from (collector, generation): a collector that starts a run moves to
the next generation in the same transition, so a replay starts nothing twice. Windows are
durable timers (outbox rows); a timer that fires after its window moved on changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from events.ids import derived_id
from events.models import (
    FLOW_TIMER_FIRED,
    RUN_REQUESTED,
    FlowTimerFired,
    RunRequested,
    TriggerCollected,
)
from orchestrator.core.commands import CancelTimer, Emit
from orchestrator.core.expressions import ExpressionError
from orchestrator.core.flowcheck import Collecting, key_value
from orchestrator.core.limits import FlowTransition

COLLECTOR = "collector"
_LAST = "last"  # a debounce keeps one entry: the latest event

CollectorEvent = TriggerCollected | FlowTimerFired


@dataclass(slots=True)
class Collector:
    entity_id: str
    workflow: str
    mode: str  # "debounce" or "batch"
    key: str
    period_s: float = 0.0
    max_size: int = 0
    max_wait_s: float = 0.0
    generation: int = 0  # runs started so far
    count: int = 0  # events in the current window
    first_at: float | None = None
    last_at: float | None = None
    timers: int = 0
    timer: str | None = None
    timer_due: float | None = None
    updated_at: float = 0.0
    # The events held, as JSON: the latest (debounce), or the batch in arrival order.
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    kind = COLLECTOR

    def header_dict(self) -> dict[str, Any]:
        return {
            "entity_id": self.entity_id,
            "kind": COLLECTOR,
            "workflow": self.workflow,
            "mode": self.mode,
            "key": self.key,
            "period_s": self.period_s,
            "max_size": self.max_size,
            "max_wait_s": self.max_wait_s,
            "generation": self.generation,
            "count": self.count,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "timers": self.timers,
            "timer": self.timer,
            "timer_due": self.timer_due,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_parts(cls, header: dict[str, Any], entries: dict[str, dict[str, Any]]) -> Collector:
        collector = cls(**{k: v for k, v in header.items() if k != "kind"})
        collector.entries = dict(sorted(entries.items()))
        return collector


def new_collector(event: TriggerCollected) -> Collector:
    return Collector(event.collector, event.workflow, event.mode, event.key)


def apply_collector(
    collector: Collector | None, event: CollectorEvent, now: float
) -> FlowTransition:
    if collector is None:
        if not isinstance(event, TriggerCollected):
            return FlowTransition(None, applied=False)
        out = FlowTransition(new_collector(event), created=True)
    else:
        out = FlowTransition(collector)
    entity: Collector = out.entity
    if isinstance(event, TriggerCollected):
        _collected(entity, event, now, out)
    elif event.timer_id == entity.timer and entity.count:
        _start_run(entity, now, out)
    else:
        out.applied = False  # a window that moved on (or closed) since this timer was set
    if out.applied:
        entity.updated_at = now
    return out


def _collected(c: Collector, event: TriggerCollected, now: float, out: FlowTransition) -> None:
    # The settings travel with each event: the latest are in force.
    c.mode, c.period_s = event.mode, event.period_s
    c.max_size, c.max_wait_s = event.max_size, event.max_wait_s
    c.count += 1
    c.last_at = now
    if c.count == 1:
        c.first_at = now
    if c.mode == "debounce":
        c.entries[_LAST] = event.event
        out.changed.add(_LAST)
        _set_timer(c, now + c.period_s, out)
        return
    entry = f"{c.count:07d}"
    c.entries[entry] = event.event
    out.changed.add(entry)
    if c.count >= c.max_size:
        _start_run(c, now, out)
    elif c.count == 1:
        _set_timer(c, now + c.max_wait_s, out)


def _set_timer(c: Collector, due: float, out: FlowTransition) -> None:
    if c.timer is not None:
        out.commands.append(CancelTimer(c.timer))
    c.timers += 1
    key = f"timer:{c.timers}"
    c.timer, c.timer_due = f"{c.entity_id}:{key}", due
    fired = FlowTimerFired(entity=c.entity_id, timer_id=c.timer)
    out.commands.append(Emit(FLOW_TIMER_FIRED, c.entity_id, fired, key, due_at=due))


def _start_run(c: Collector, now: float, out: FlowTransition) -> None:
    run_id = collected_run_id(c.entity_id, c.generation)
    held = list(c.entries.values())
    run_input: dict[str, Any] = (
        {"event": held[-1], "count": c.count}
        if c.mode == "debounce"
        else {"events": held, "count": c.count}
    )
    request = RunRequested(workflow=c.workflow, input=run_input, run_id=run_id)
    out.commands.append(Emit(RUN_REQUESTED, run_id, request, "requested"))
    if c.timer is not None:
        out.commands.append(CancelTimer(c.timer))
    out.changed.update(c.entries)
    c.entries.clear()
    c.generation += 1
    c.count = 0
    c.first_at = c.last_at = None
    c.timer = c.timer_due = None


def collected_run_id(collector: str, generation: int) -> str:
    """The run a collector's `generation`-th window starts: the same every time it is computed."""
    return derived_id("collected", collector, str(generation))


def collector_id(workflow: str, key: str) -> str:
    return derived_id("collect", workflow, key)


def collected(workflow: str, collecting: Collecting, event: dict[str, Any]) -> TriggerCollected:
    """What the router hands the collector of `event`'s key (`event` as the router passes it
    on: `triggers.router.event_as_json`). An event whose key cannot be read (a missing field)
    is collected under the empty key, with the events that have no key: never dropped."""
    try:
        key = key_value(collecting.key, event)
    except ExpressionError:
        key = ""
    return TriggerCollected(
        collector=collector_id(workflow, key),
        workflow=workflow,
        mode=collecting.mode,
        key=key,
        event=event,
        period_s=collecting.period_s,
        max_size=collecting.max_size,
        max_wait_s=collecting.max_wait_s,
    )
