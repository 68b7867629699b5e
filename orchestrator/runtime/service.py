"""Request/reply endpoints the orchestrator serves on core NATS, read from committed state.

    <ns>.api.<partition>.status   {"run_id": ...}                      -> {"ok": true, "run": {...}}
    <ns>.api.<partition>.runs     {"workflow"?, "status"?, "limit"?} -> {"ok": true, "runs": []}
    <ns>.api.<partition>.workers  {}                                  -> {"ok": true, "workers": []}
    <ns>.api.<partition>.flow     {}                                   -> {"ok": true, "flows": []}
                                  {"limiter": ..., "request": ...}     -> {"ok": true, "place": {}}

A run's detail marks each node that waits for a worker no running worker could be
(`no_worker`, see `runtime.workers`); `workers` lists the workers by their heartbeats.

`flow` lists the partition's limiters and collectors with work in hand (docs/flow-control.md),
or says where one request stands in its limiter's queue. A run's status says where it waits;
when its limiter lives on another partition, the status answer asks that partition's `flow`.

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
        self._subs.append(
            await self.bus.serve(topo.api_subject("flow", self.partition), self._flow)
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
        await self._locate_elsewhere(detail)
        return _reply(ok=True, run=detail)

    async def _flow(self, payload: bytes) -> bytes:
        try:
            request = json.loads(payload or b"{}")
            limiter, wanted = request.get("limiter"), request.get("request")
        except (ValueError, AttributeError) as exc:
            return _reply(ok=False, error=f"bad request: {exc}")
        if isinstance(limiter, str) and isinstance(wanted, str):
            return _reply(ok=True, place=await self.queries.flow_position(limiter, wanted))
        return _reply(ok=True, flows=await self.queries.flows())

    async def _locate_elsewhere(self, detail: dict[str, Any]) -> None:
        """Waits whose limiter is on another partition: ask it (best effort, briefly)."""
        topo = self.bus.topology
        waits = [detail.get("waiting"), *(n.get("waiting") for n in detail["nodes"].values())]
        for wait in waits:
            if not wait or "position" in wait:
                continue
            partition = topo.partition(wait["limiter"])
            if partition == self.partition:
                continue
            body = json.dumps({"limiter": wait["limiter"], "request": wait["request"]}).encode()
            with contextlib.suppress(BusError, ValueError):
                reply = json.loads(
                    await self.bus.request(topo.api_subject("flow", partition), body, timeout=1.0)
                )
                wait.update(reply.get("place") or {})

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
