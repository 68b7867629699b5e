"""A run looked into: its event history, its timeline, its input and output in full (for a
download); and the deployment's workers and task queues."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response

from events.bus.admin import ConsumerState
from events.topology import Topology
from orchestrator.errors import UnknownWorkflow
from orchestrator.runtime.workers import WorkerDirectory

from .context import AppContext, context
from .history import read_history
from .models import Problem
from .routes_runs import NODE_KEY, NOT_FOUND, RunId
from .timeline import timeline_of
from .views import HistoryPage, QueuesPage, QueueState, Timeline, WorkersPage
from .workers import workers_page

router = APIRouter(tags=["inspect"], responses={422: {"model": Problem}})
Ctx = Annotated[AppContext, Depends(context)]


@router.get("/runs/{run_id}/events", response_model=HistoryPage)
async def run_history(
    ctx: Ctx,
    run_id: RunId,
    after: Annotated[int, Query(ge=0, le=2**62, description="Stream sequence to start after.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> HistoryPage:
    """Every CloudEvent of the run in the event stream, oldest first, with its headers and
    data (a large value summarised); `next_after` and `more` to page on. Follow
    `/api/events?run_id=` and read from the last `seq` for the history live."""
    return await read_history(ctx.client.bus, run_id, after=after, limit=limit)


@router.get("/runs/{run_id}/timeline", response_model=Timeline, responses=NOT_FOUND)
async def run_timeline(ctx: Ctx, run_id: RunId) -> Timeline:
    """Each node's attempts in time (dispatched, started, finished); a mapped node as one lane
    with how many of its children ran at each moment."""
    detail = await ctx.queries.run_detail(run_id, include_io=False)
    if detail is None:
        raise HTTPException(404, f"no run {run_id!r} (a run just triggered appears once applied)")
    spans = {
        node_id: await ctx.queries.child_spans(run_id, node_id)
        for node_id, node in detail["nodes"].items()
        if node.get("children") is not None
    }
    return timeline_of(detail, spans, time.time())


@router.get(
    "/runs/{run_id}/values/{which}",
    responses={
        **NOT_FOUND,
        200: {"content": {"application/json": {}}, "description": "The value as a JSON file."},
    },
    response_class=Response,
)
async def run_value(
    ctx: Ctx,
    run_id: RunId,
    which: Annotated[Literal["input", "output"], Path(description="Which value.")],
    node: Annotated[
        str | None, Query(pattern=NODE_KEY, description="A node's (or child's) instead.")
    ] = None,
) -> Response:
    """The run's (or a node's) input or output in full, as a JSON download: the run page
    shows large values truncated."""
    value: Any
    if node is None:
        header = await ctx.queries.run_header(run_id)
        if header is None:
            raise HTTPException(404, f"no run {run_id!r}")
        value = header.get(which)
    else:
        state = await ctx.queries.node(run_id, node)
        if state is None:
            raise HTTPException(404, f"run {run_id!r} has no node {node!r} (yet)")
        value = state.input if which == "input" else state.output
    name = f"{run_id}{'-' + node.replace('[', '-').replace(']', '') if node else ''}-{which}.json"
    return Response(
        json.dumps(value, indent=2, default=str),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/queues", response_model=QueuesPage, responses={503: {"model": Problem}})
async def list_queues(ctx: Ctx) -> QueuesPage:
    """Every task queue's consumer with its backlog: waiting, running (ack pending), idle
    pulls, the age of the oldest waiting task; and the dead-letter stream's size."""
    bus = ctx.client.bus
    states = await bus.consumer_states(bus.topology.tasks_stream)
    dead = await bus.stream_size(bus.topology.dlq_stream)
    return QueuesPage(queues=[_queue(bus.topology, state) for state in states], dead_letters=dead)


@router.get("/workers", response_model=WorkersPage)
async def list_workers(ctx: Ctx) -> WorkersPage:
    """Every worker whose last heartbeat the workers stream keeps (live ones first: running
    and heard from within three of its heartbeat intervals; a stopped or silent one is
    `gone`), and each registered workflow with a task no live worker serves."""
    directory = ctx.queries.workers or WorkerDirectory(ctx.client.bus, ctx.registry)
    workers = await directory.workers()
    specs = []
    for name in await ctx.registry.names():
        with contextlib.suppress(UnknownWorkflow):  # removed since it was listed
            specs.append(await ctx.registry.get(name))
    return workers_page(workers, specs)


def _queue(topology: Topology, state: ConsumerState) -> QueueState:
    queue = task = None
    prefix = f"{topology.namespace}.task."
    if state.filters and state.filters[0].startswith(prefix):
        tokens = state.filters[0][len(prefix) :].split(".")
        queue = tokens[0] if tokens[0] not in ("*", ">") else None
        task = tokens[1] if len(tokens) > 1 and tokens[1] not in ("*", ">") else None
    return QueueState(
        consumer=state.name,
        queue=queue,
        task=task,
        filters=list(state.filters),
        pending=state.pending,
        ack_pending=state.ack_pending,
        redelivered=state.redelivered,
        waiting_pulls=state.waiting_pulls,
        max_ack_pending=state.max_ack_pending,
        oldest_waiting_s=state.oldest_waiting_s,
        last_active=state.last_active,
    )
