"""/api/runs: list (filtered, keyset-paginated), counts, detail, nodes, children, cancel, retry."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, status

from events.ids import TOKEN_PATTERN
from orchestrator.core.expressions import NODE_ID_PATTERN
from orchestrator.core.rules import retry_refusal
from orchestrator.core.state import NODE_KEY_PATTERN, NodeState
from orchestrator.core.status import bounded
from orchestrator.core.statuses import RUN_TERMINAL, RunStatus
from orchestrator.errors import RunRefused, UnknownRun
from orchestrator.runtime.queries import RunFilter

from .context import AppContext, context
from .models import (
    Accepted,
    ActionRequest,
    ChildPage,
    ChildSummary,
    NodeDetail,
    Problem,
    RunCounts,
    RunDetail,
    RunPage,
)

router = APIRouter(tags=["runs"], responses={422: {"model": Problem}})

# The id rules of the core, anchored for OpenAPI (ECMA regex: `$`, not `\Z`).
RUN_ID = f"^{TOKEN_PATTERN}$"
NODE_ID = f"^{NODE_ID_PATTERN}$"
NODE_KEY = f"^{NODE_KEY_PATTERN}$"

MAX_ITEM_BYTES = 1024  # a child's item in a list of children: a preview, the node has it all
RunId = Annotated[str, Path(pattern=RUN_ID, description="A run id.")]
Ctx = Annotated[AppContext, Depends(context)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such run (or node)."}
}


def _filters(
    workflow: Annotated[
        str | None, Query(max_length=64, description="Only runs of this workflow.")
    ] = None,
    status: Annotated[
        list[RunStatus] | None,
        Query(description="Only runs in these statuses (repeatable)."),
    ] = None,
    created_after: Annotated[
        float | None, Query(description="Created at or after (unix seconds).")
    ] = None,
    created_before: Annotated[
        float | None, Query(description="Created before (unix seconds).")
    ] = None,
) -> RunFilter:
    return RunFilter(workflow, tuple(status or ()), created_after, created_before)


Filters = Annotated[RunFilter, Depends(_filters)]


@router.get("/runs", response_model=RunPage, responses={400: {"model": Problem}})
async def list_runs(
    ctx: Ctx,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=400, description="`next_cursor` of the previous page.")
    ] = None,
) -> RunPage:
    """Runs, newest first."""
    runs, next_cursor = await ctx.queries.list_runs(filters, limit=limit, cursor=cursor)
    return RunPage.model_validate({"runs": runs, "next_cursor": next_cursor})


@router.get("/stats/runs", response_model=RunCounts)
async def count_runs(ctx: Ctx, filters: Filters) -> RunCounts:
    """How many runs match the filters, by status."""
    by_status = await ctx.queries.count_runs(filters)
    return RunCounts(total=sum(by_status.values()), by_status=by_status)


@router.get("/runs/{run_id}", response_model=RunDetail, responses=NOT_FOUND)
async def get_run(
    ctx: Ctx,
    run_id: RunId,
    io: Annotated[bool, Query(description="Include inputs and outputs.")] = True,
) -> dict[str, Any]:
    """A run: status, input, output, error, timings, and each node's state and attempts
    (mapped nodes summarised: children by status, the first failures)."""
    detail = await ctx.queries.run_detail(run_id, include_io=io)
    if detail is None:
        raise HTTPException(404, f"no run {run_id!r} (a run just triggered appears once applied)")
    return detail


@router.get("/runs/{run_id}/nodes/{key}", response_model=NodeDetail, responses=NOT_FOUND)
async def get_node(
    ctx: Ctx,
    run_id: RunId,
    key: Annotated[str, Path(pattern=NODE_KEY, description="A node id, or `<id>[<index>]`.")],
) -> NodeDetail:
    """One node, or one child of a mapped node, with its attempts, input, output and error."""
    node = await ctx.queries.node(run_id, key)
    if node is None:
        raise HTTPException(404, f"run {run_id!r} has no node {key!r} (yet)")
    children = None
    if node.children is not None:
        counts = await ctx.queries.child_counts(run_id, node.key)
        children = {"total": node.children, **dict(sorted(counts.items()))}
    return NodeDetail.model_validate(
        {
            "key": node.key,
            "node_id": node.node_id,
            "index": node.index,
            "status": node.status,
            "attempt": node.attempt,
            # A mapped parent has no budget of its own: each child has one.
            "attempts_since_retry": None
            if node.children is not None
            else node.attempts_since_retry,
            "attempt_history": [a.to_dict() for a in node.attempts],
            "input": node.input,
            "output": node.output,
            "error": node.error,
            "children": children,
            "waiting": await ctx.queries.node_waiting(node),
        }
    )


@router.get(
    "/runs/{run_id}/nodes/{node_id}/children", response_model=ChildPage, responses=NOT_FOUND
)
async def list_children(
    ctx: Ctx,
    run_id: RunId,
    node_id: Annotated[str, Path(pattern=NODE_ID, description="A mapped node's id.")],
    after: Annotated[
        int, Query(ge=-1, le=2**31, description="Index to start after (`next_after`).")
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[str | None, Query(max_length=32, description="Only this status.")] = None,
) -> ChildPage:
    """The children of a mapped node in index order, a page at a time."""
    parent = await ctx.queries.node(run_id, node_id)
    if parent is None:
        raise HTTPException(404, f"run {run_id!r} has no node {node_id!r} (yet)")
    children, next_after = await ctx.queries.children(
        run_id, node_id, after=after, limit=limit, status=status
    )
    param = await _map_param(ctx, run_id, node_id)
    return ChildPage(children=[_child(c, param) for c in children], next_after=next_after)


async def _map_param(ctx: AppContext, run_id: str, node_id: str) -> str | None:
    """The parameter a mapped node maps over (its children's item), from the run's spec."""
    header = await ctx.queries.run_header(run_id)
    if header is None:
        return None
    spec = await ctx.registry.get(header["workflow"], header["version"])
    node = spec.nodes.get(node_id)
    return node.spec.map.param if node is not None and node.spec.map is not None else None


def _child(node: NodeState, param: str | None) -> ChildSummary:
    item = node.input.get(param) if param and isinstance(node.input, dict) else None
    return ChildSummary.model_validate(
        {
            "key": node.key,
            "index": node.index,
            "item": bounded(item, MAX_ITEM_BYTES),
            "status": node.status,
            "attempt": node.attempt,
            "attempt_history": [a.to_dict() for a in node.attempts],
            "error": node.error,
        }
    )


@router.post(
    "/runs/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={**NOT_FOUND, 409: {"model": Problem, "description": "The run already ended."}},
)
async def cancel_run(
    ctx: Ctx, run_id: RunId, request: Annotated[ActionRequest | None, Body()] = None
) -> Accepted:
    """Cancel a run: its in-flight tasks are asked to stop, nothing new is dispatched."""
    header = await _existing(ctx, run_id)
    if header["status"] in RUN_TERMINAL:
        raise HTTPException(409, f"run {run_id!r} already {header['status']}: nothing to cancel")
    reason = (request.reason if request else None) or "cancelled from the API"
    await _act(ctx.client.cancel(run_id, reason))
    return Accepted(run_id=run_id, action="cancel", url=f"/api/runs/{run_id}")


@router.post(
    "/runs/{run_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={
        **NOT_FOUND,
        409: {"model": Problem, "description": "The run is not failed or cancelled."},
    },
)
async def retry_run(
    ctx: Ctx, run_id: RunId, request: Annotated[ActionRequest | None, Body()] = None
) -> Accepted:
    """Resume a failed or cancelled run from the nodes that did not succeed (same run id)."""
    header = await _existing(ctx, run_id)
    refusal = retry_refusal(header["status"], header.get("error"))
    if refusal is not None:
        raise HTTPException(409, f"run {run_id!r} cannot be retried: {refusal}")
    reason = (request.reason if request else None) or "retried from the API"
    await _act(ctx.client.retry(run_id, reason))
    return Accepted(run_id=run_id, action="retry", url=f"/api/runs/{run_id}")


async def _act(action: Awaitable[None]) -> None:
    """The client checks the orchestrator's own state too: this API's projection may lag it."""
    try:
        await action
    except UnknownRun as exc:
        raise HTTPException(404, str(exc)) from None
    except RunRefused as exc:
        raise HTTPException(409, str(exc)) from None


async def _existing(ctx: AppContext, run_id: str) -> dict[str, Any]:
    header = await ctx.queries.run_header(run_id)
    if header is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return header
