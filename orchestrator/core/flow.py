"""Flow-control entities as the engine sees them: which entity an event is for, how to apply it,
and how an entity is stored (a header and entries, like a run's header and nodes).

    entity_of(event)                    -> the limiter's or the collector's id
    apply_flow(entity, event, now)      -> FlowTransition
    entity_from_parts(header, entries)  -> Limiter | Collector
"""

from __future__ import annotations

from typing import Any

from events.models import FlowTimerFired, LimitReleased, LimitRequested, TriggerCollected
from orchestrator.core.collect import COLLECTOR, Collector, apply_collector
from orchestrator.core.limits import LIMITER, FlowTransition, Limiter, apply_limiter

FlowEntity = Limiter | Collector
FlowEvent = LimitRequested | LimitReleased | TriggerCollected | FlowTimerFired
FLOW_EVENTS = (LimitRequested, LimitReleased, TriggerCollected, FlowTimerFired)


def entity_of(event: FlowEvent) -> str:
    if isinstance(event, FlowTimerFired):
        return event.entity
    if isinstance(event, TriggerCollected):
        return event.collector
    return event.limiter


def apply_flow(entity: FlowEntity | None, event: FlowEvent, now: float) -> FlowTransition:
    """Apply `event` to its entity (None: not stored yet) in place. An event of one kind of
    entity for an id held by the other kind changes nothing (ids are derived apart: a bug)."""
    if isinstance(event, TriggerCollected):
        if entity is None or isinstance(entity, Collector):
            return apply_collector(entity, event, now)
    elif isinstance(event, FlowTimerFired):
        if isinstance(entity, Collector):
            return apply_collector(entity, event, now)
        if isinstance(entity, Limiter):
            return apply_limiter(entity, event, now)
    elif entity is None or isinstance(entity, Limiter):
        return apply_limiter(entity, event, now)
    return FlowTransition(entity, applied=False)


def entity_from_parts(header: dict[str, Any], entries: dict[str, dict[str, Any]]) -> FlowEntity:
    if header["kind"] == LIMITER:
        return Limiter.from_parts(header, list(entries.values()))
    if header["kind"] == COLLECTOR:
        return Collector.from_parts(header, entries)
    raise ValueError(f"unknown flow entity kind {header['kind']!r}")


def entry_dict(entity: FlowEntity, entry_id: str) -> dict[str, Any] | None:
    """An entry as stored (None: it is gone, delete its row)."""
    if isinstance(entity, Limiter):
        entry = entity.entries.get(entry_id)
        return entry.to_dict() if entry is not None else None
    return entity.entries.get(entry_id)


def is_active(entity: FlowEntity) -> bool:
    """Something is held, queued or collected: what the gauges and the flow API list."""
    if isinstance(entity, Limiter):
        return bool(entity.holding or entity.waiting)
    return bool(entity.count)
