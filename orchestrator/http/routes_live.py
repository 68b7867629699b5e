"""Task logs (a page, and a live tail) and the live stream of run events, as SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import StringConstraints

from .context import AppContext, context
from .live import Scope
from .logs import read_logs
from .models import LogPage, Problem
from .routes_runs import NODE_KEY, RUN_ID, RunId

router = APIRouter(tags=["live"], responses={422: {"model": Problem}})
Ctx = Annotated[AppContext, Depends(context)]
NodeFilter = Annotated[
    list[Annotated[str, StringConstraints(pattern=NODE_KEY)]] | None,
    Query(
        description="Node ids (a mapped node: all its children) or keys; repeatable (any of "
        "them); none: the whole run.",
    ),
]


@router.get("/runs/{run_id}/logs", response_model=LogPage)
async def get_logs(
    ctx: Ctx,
    run_id: RunId,
    node: NodeFilter = None,
    attempt: Annotated[int | None, Query(ge=1, le=2**31)] = None,
    after: Annotated[int, Query(ge=0, le=2**62, description="Stream sequence to start after.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> LogPage:
    """A page of a run's task log lines, oldest first, optionally for one node or attempt."""
    page = await read_logs(
        ctx.client.bus, run_id, node=node, attempt=attempt, after=after, limit=limit
    )
    return LogPage(lines=page.lines, next_after=page.next_after, more=page.more)


@router.get("/runs/{run_id}/logs/stream", response_class=EventSourceResponse)
async def tail_logs(
    ctx: Ctx,
    run_id: RunId,
    node: NodeFilter = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    last_event_id: Annotated[
        str | None, Header(max_length=32, description="Resume after this sequence.")
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Live tail: `ready`, then `logs` messages (a JSON list of log lines, `id` = the last
    sequence) as lines arrive; resumes from `Last-Event-ID` on reconnect."""
    if last_event_id is not None and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    async for message in ctx.live.log_tail(run_id, node, after):
        yield message


@router.get("/events", response_class=EventSourceResponse)
async def stream_events(
    ctx: Ctx,
    run_id: Annotated[
        str | None, Query(pattern=RUN_ID, description="Follow this run only.")
    ] = None,
    scope: Annotated[
        Scope, Query(description="Without run_id: `all` events, or `runs` (run-level only).")
    ] = "all",
) -> AsyncIterator[ServerSentEvent]:
    """Run events live: `ready` once subscribed, then `events` messages (a JSON list of event
    summaries: type, run_id, node_id, attempt, time, worker, error), and `resync` when some
    were dropped because the client read too slowly."""
    async for message in ctx.live.run_events(run_id, scope):
        yield message
