"""Flow-control entities in the engine: limiters and collectors, cached while hot.

A limiter or a collector is applied like a run — loaded (from this cache, else the store),
advanced by its pure machine (`core.flow.apply_flow`), staged into the batch's one transaction
with the processed id of its event — but it never finishes: a limit key in use stays hot. The
cache is bounded (least recently used out); an entity that leaves it is read back from sqlite.
"""

from __future__ import annotations

from collections import OrderedDict

from orchestrator.core.flow import FlowEntity, FlowEvent, apply_flow, entity_of
from orchestrator.core.limits import FlowTransition
from orchestrator.runtime.store import Store


class FlowCache:
    def __init__(self, store: Store, size: int) -> None:
        self.store = store
        self.size = size
        self._entities: OrderedDict[str, FlowEntity] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entities)

    async def load(self, entity_id: str) -> FlowEntity | None:
        entity = self._entities.get(entity_id)
        if entity is not None:
            self._entities.move_to_end(entity_id)
            return entity
        entity = await self.store.load_flow(entity_id)
        if entity is not None:
            self.remember(entity)
        return entity

    def remember(self, entity: FlowEntity) -> None:
        self._entities[entity.entity_id] = entity
        while len(self._entities) > self.size:
            self._entities.popitem(last=False)

    def forget(self, entity_ids: set[str]) -> None:
        for entity_id in entity_ids:
            self._entities.pop(entity_id, None)

    async def apply(self, event: FlowEvent, now: float) -> FlowTransition:
        transition = apply_flow(await self.load(entity_of(event)), event, now)
        if transition.created and transition.entity is not None:
            self.remember(transition.entity)
        return transition
