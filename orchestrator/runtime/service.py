"""Request/reply endpoints the orchestrator serves on core NATS, read from committed state.

    <ns>.api.<partition>.status   {"run_id": ...}                      -> {"ok": true, "run": {...}}
    <ns>.api.<partition>.runs     {"workflow"?, "status"?, "limit"?} -> {"ok": true, "runs": []}

The CLI reads run state this way (one round trip, answered from the store's committed state,
so it never shows a half-applied batch) and follows a run live by subscribing to the run's
event subjects (`<ns>.evt.*.*.*.<run_id>`).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from events.bus import Bus
from orchestrator.core.status import run_status
from orchestrator.runtime.store import Store


class ApiService:
    def __init__(self, bus: Bus, store: Store, partition: int = 0) -> None:
        self.bus = bus
        self.store = store
        self.partition = partition
        self._subs: list[Any] = []

    async def start(self) -> None:
        topo = self.bus.topology
        self._subs.append(
            await self.bus.serve(topo.api_subject("status", self.partition), self._status)
        )
        self._subs.append(
            await self.bus.serve(topo.api_subject("runs", self.partition), self._runs)
        )

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):  # the connection may already be closed
                await sub.unsubscribe()
        self._subs.clear()

    async def _status(self, payload: bytes) -> bytes:
        try:
            request = json.loads(payload or b"{}")
            run_id = request["run_id"]
            if not isinstance(run_id, str):
                raise TypeError("run_id must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            return _reply(ok=False, error=f'bad request: expected {{"run_id": "..."}} ({exc})')
        run = await self.store.read_run(run_id)
        if run is None:
            return _reply(ok=False, error=f"no run {run_id!r}", not_found=True)
        return _reply(ok=True, run=run_status(run))

    async def _runs(self, payload: bytes) -> bytes:
        try:
            request = json.loads(payload or b"{}")
            limit = int(request.get("limit", 50))
        except (ValueError, TypeError, AttributeError) as exc:
            return _reply(ok=False, error=f"bad request: {exc}")
        runs = await self.store.list_runs(request.get("workflow"), request.get("status"), limit)
        return _reply(ok=True, runs=runs)


def _reply(**fields: Any) -> bytes:
    return json.dumps(fields, default=str).encode()
