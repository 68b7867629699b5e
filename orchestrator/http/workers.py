"""The Workers page's data: every worker whose heartbeat the stream still keeps, and the
registered workflows with a task no live worker serves (pure, from what the runtime read)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from orchestrator.core.compiler import CompiledSpec
from orchestrator.runtime.workers import WorkerInfo

from .views import ServedTask, Unserved, WorkersPage, WorkerState


def workers_page(workers: Iterable[WorkerInfo], specs: Iterable[CompiledSpec]) -> WorkersPage:
    known = list(workers)
    live = [w for w in known if w.live]
    rows = sorted(known, key=lambda w: (not w.live, -w.seen_at))
    return WorkersPage(workers=[_row(w) for w in rows], unserved=unserved(specs, live))


def unserved(specs: Iterable[CompiledSpec], live: list[WorkerInfo]) -> list[Unserved]:
    """Each workflow's (latest version's) task nodes whose (queue, task) no live worker
    serves."""
    out = []
    for compiled in specs:
        missing: dict[tuple[str, str], None] = {}
        for node in compiled.spec.nodes:
            if node.task is None:
                continue  # a sleep, a wait or a sub-workflow: no worker runs it
            if not any(w.serves(node.queue, node.task) for w in live):
                missing[(node.queue, node.task)] = None
        if missing:
            tasks = [ServedTask(queue=q, task=t) for q, t in missing]
            out.append(Unserved(workflow=compiled.name, version=compiled.version, tasks=tasks))
    return out


def _row(info: WorkerInfo) -> WorkerState:
    beat = info.heartbeat
    served = [ServedTask(queue=s.queue, task=s.task) for s in beat.serves]
    return WorkerState(
        worker=beat.worker,
        host=beat.host,
        pid=beat.pid,
        version=beat.version,
        serves=served,
        queues=sorted({s.queue for s in served}),
        tasks=sorted({s.task for s in served}),
        concurrency=beat.concurrency,
        in_flight=beat.in_flight,
        isolated=beat.isolated,
        started_at=_epoch(beat.started_at),
        last_heartbeat=info.seen_at,
        interval_s=beat.interval_s,
        state=beat.state,
        live=info.live,
        status=("alive" if beat.state == "running" else "draining") if info.live else "gone",
    )


def _epoch(moment: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
