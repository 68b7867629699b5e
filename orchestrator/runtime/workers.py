"""The workers of a deployment as their heartbeats tell it, and the nodes no running worker serves.

Every worker publishes `io.conveyor.worker.heartbeat` on `<ns>.worker.<id>` every few seconds
(`workers.presence`, or any worker following docs/protocol.md); the `<NS>_WORKERS` stream keeps
the last one of each. `read_workers` reads them all in one batched direct get. A worker is
*live* while it says it is running and its last heartbeat is at most `LIVENESS_BEATS` of its
intervals old, by the server's clock of when the heartbeat was stored.

`WorkerDirectory` is what the status API and the HTTP API ask, per request (cached for a second
so a dashboard polling many runs does not read the stream each time): `workers()` for a Workers
page, `note_unserved(detail)` to add to each node of a run that waits for a worker no running
worker could be — dispatched, not started, its (queue, task) served by no live worker — the
entry `no_worker: {queue, task, seconds, message}` ("no worker has served task X (queue Q) for
N s").
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from events.bus import Bus, Delivery
from events.codec import decode
from events.errors import BusError, MalformedEvent
from events.models import WorkerHeartbeat
from orchestrator.core.status import no_worker_note
from orchestrator.errors import UnknownWorkflow
from orchestrator.runtime.registry import Registry

log = structlog.get_logger("conveyor.workers")

# Missed heartbeats after which a worker counts as gone (killed, partitioned, frozen).
LIVENESS_BEATS = 3
_CACHE_S = 1.0

# (run_id, node_id) -> when its oldest child still waiting for a worker was dispatched.
OldestChild = Callable[[str, str], Awaitable[float | None]]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    heartbeat: WorkerHeartbeat
    seen_at: float  # epoch seconds, when the server stored the last heartbeat
    live: bool

    @property
    def name(self) -> str:
        return self.heartbeat.worker

    def serves(self, queue: str, task: str) -> bool:
        return any(s.queue == queue and s.task == task for s in self.heartbeat.serves)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.heartbeat.model_dump(mode="json"),
            "seen_at": self.seen_at,
            "live": self.live,
        }


def is_live(heartbeat: WorkerHeartbeat, seen_at: float, now: float) -> bool:
    return heartbeat.state == "running" and now - seen_at <= LIVENESS_BEATS * heartbeat.interval_s


async def read_workers(bus: Bus, now: float | None = None) -> list[WorkerInfo]:
    """Every worker with a heartbeat still kept, newest first; live ones are marked. A heartbeat
    that does not decode is skipped (and logged): one bad publisher must not hide the rest."""
    topology = bus.topology
    deliveries = await bus.last_per_subject(topology.workers_stream, topology.workers_filter())
    now = time.time() if now is None else now
    found = []
    for delivery in deliveries:
        try:
            heartbeat = decode(delivery.headers, delivery.data).data_as(WorkerHeartbeat)
        except MalformedEvent as exc:
            log.warning("heartbeat skipped", subject=delivery.subject, reason=exc.reason)
            continue
        seen_at = _stored_at(delivery, now)
        found.append(WorkerInfo(heartbeat, seen_at, is_live(heartbeat, seen_at, now)))
    return sorted(found, key=lambda w: w.seen_at, reverse=True)


def _stored_at(delivery: Delivery, default: float) -> float:
    stamp = delivery.headers.get("Nats-Time-Stamp")
    if not stamp:
        return default
    try:  # RFC 3339 with nanoseconds: Python takes at most microseconds
        head, _, fraction = stamp.rstrip("Z").partition(".")
        parsed = dt.datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00")
    except ValueError:
        return default
    return parsed.timestamp()


class WorkerDirectory:
    def __init__(self, bus: Bus, registry: Registry | None = None) -> None:
        self.bus = bus
        self.registry = registry or Registry(bus)
        self._cached: tuple[float, list[WorkerInfo]] | None = None

    async def workers(self) -> list[WorkerInfo]:
        """`read_workers`, at most a second old."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < _CACHE_S:
            return self._cached[1]
        workers = await read_workers(self.bus)
        self._cached = (now, workers)
        return workers

    async def note_unserved(self, detail: dict[str, Any], oldest_child: OldestChild) -> None:
        """Add `no_worker` to the nodes of `detail` (a run as `run_status` shows it) that wait
        for a worker no live worker could be. Best effort: when the heartbeats or the spec
        cannot be read, the detail is left as it is."""
        waiting = {
            node_id: entry
            for node_id, entry in detail.get("nodes", {}).items()
            if entry["status"] == "dispatched" or (entry.get("children") or {}).get("dispatched")
        }
        if not waiting or detail.get("status") != "running":
            return
        try:
            spec = await self.registry.get(detail["workflow"], detail["version"])
            live = [w for w in await self.workers() if w.live]
        except (BusError, UnknownWorkflow) as exc:
            log.debug("cannot tell which nodes no worker serves", error=str(exc))
            return
        now = time.time()
        for node_id, entry in waiting.items():
            node = spec.nodes.get(node_id)
            if node is None or node.spec.task is None:
                continue  # a child workflow: no worker runs it
            queue, task = node.spec.queue, node.spec.task
            if any(w.serves(queue, task) for w in live):
                continue
            since = await _waiting_since(detail["run_id"], node_id, entry, oldest_child)
            if since is not None:
                entry["no_worker"] = no_worker_note(queue, task, max(0.0, now - since))


async def _waiting_since(
    run_id: str, node_id: str, entry: dict[str, Any], oldest_child: OldestChild
) -> float | None:
    if entry.get("children"):
        return await oldest_child(run_id, node_id)
    history = entry.get("attempt_history") or []
    return float(history[-1]["dispatched_at"]) if history else None
