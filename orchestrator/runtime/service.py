"""Request/reply endpoints the orchestrator serves on core NATS, read from committed state.

    <ns>.api.<partition>.status   {"run_id": ...}                      -> {"ok": true, "run": {...}}
    <ns>.api.<partition>.runs     {"workflow"?, "status"?, "limit"?} -> {"ok": true, "runs": []}
    <ns>.api.<partition>.workers  {}                                  -> {"ok": true, "workers": []}

A run's detail marks each node that waits for a worker no running worker could be
(`no_worker`, see `runtime.workers`); `workers` lists the workers by their heartbeats.

The CLI reads run state this way (one round trip, answered from the store's committed state,
so it never shows a half-applied batch) and follows a run live by subscribing to the run's
event subjects (`<ns>.evt.*.*.*.<run_id>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from events.bus import Bus
from events.errors import BusError
from orchestrator.runtime.queries import Queries, RunFilter
from orchestrator.runtime.store import Store
from orchestrator.runtime.workers import WorkerDirectory


class ApiService:
    def __init__(self, bus: Bus, store: Store, partition: int = 0) -> None:
        self.bus = bus
        self.store = store
        # A run's detail says which of its nodes wait for a worker that none running could be.
        self.directory = WorkerDirectory(bus)
        self.queries = Queries(store, self.directory)
        self.partition = partition
        self.name = f"status-api-p{partition}"
        self._subs: list[Any] = []
        self._stopped = asyncio.Event()

    # ---- lifecycle (runtime.supervisor.Component) -----------------------------------------
    async def run(self) -> None:
        await self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()

    async def drain(self) -> None:
        await self.close()

    async def start(self) -> None:
        topo = self.bus.topology
        self._subs.append(
            await self.bus.serve(topo.api_subject("status", self.partition), self._status)
        )
        self._subs.append(
            await self.bus.serve(topo.api_subject("runs", self.partition), self._runs)
        )
        self._subs.append(
            await self.bus.serve(topo.api_subject("workers", self.partition), self._workers)
        )

    async def close(self) -> None:
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
        # The detail without loading a big run's mapped children (counted by sqlite): a status
        # request must not stall the engine's loop on a 100,000-child run.
        detail = await self.queries.run_detail(run_id)
        if detail is None:
            return _reply(ok=False, error=f"no run {run_id!r}", not_found=True)
        return _reply(ok=True, run=detail)

    async def _runs(self, payload: bytes) -> bytes:
        try:
            request = json.loads(payload or b"{}")
            limit = int(request.get("limit", 50))
        except (ValueError, TypeError, AttributeError) as exc:
            return _reply(ok=False, error=f"bad request: {exc}")
        status = request.get("status")
        filters = RunFilter(request.get("workflow"), (status,) if status else ())
        runs, _ = await self.queries.list_runs(filters, limit=max(1, min(limit, 1000)))
        return _reply(ok=True, runs=runs)

    async def _workers(self, payload: bytes) -> bytes:
        try:
            workers = await self.directory.workers()
        except BusError as exc:
            return _reply(ok=False, error=f"cannot read the workers' heartbeats: {exc}")
        return _reply(ok=True, workers=[w.to_dict() for w in workers])


def _reply(**fields: Any) -> bytes:
    return json.dumps(fields, default=str).encode()
