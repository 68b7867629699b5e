"""/api/workflows: the registered workflows, one spec with its versions and DAG, and triggers."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, status

from events.ids import is_token
from orchestrator.core.compiler import CompiledSpec
from orchestrator.core.trigger import API_SOURCE

from .catalog import dag_of, notify_of, redacted_spec, schedules_of, versions_of
from .context import AppContext, context
from .models import Accepted, Problem, RunSummary, TriggerRequest, WorkflowDetail, WorkflowSummary

router = APIRouter(tags=["workflows"], responses={422: {"model": Problem}})

WorkflowName = Annotated[
    str,
    Path(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", description="A registered workflow's name."),
]
Ctx = Annotated[AppContext, Depends(context)]


@router.get("/workflows", response_model=list[WorkflowSummary])
async def list_workflows(ctx: Ctx) -> list[WorkflowSummary]:
    """Every registered workflow with its latest version and its runs by status."""
    names = await ctx.registry.names()
    specs = await asyncio.gather(*(ctx.registry.get(name) for name in names))
    counts = await ctx.queries.runs_by_workflow()
    out = []
    for compiled in specs:
        spec = compiled.spec
        last = await ctx.queries.last_run(compiled.name)
        schedules = schedules_of(spec)
        paused = await ctx.registry.is_paused(spec.name) if spec.schedules else False
        out.append(
            WorkflowSummary(
                name=compiled.name,
                latest_version=compiled.version,
                description=spec.description,
                nodes=len(compiled.nodes),
                runs=counts.get(compiled.name, {}),
                last_run=RunSummary.model_validate(last) if last else None,
                schedules=len(schedules),
                triggers=len(spec.on),
                next_run_at=min((s.next_at[0] for s in schedules), default=None),
                paused=paused,
            )
        )
    return out


@router.get(
    "/workflows/{name}",
    response_model=WorkflowDetail,
    responses={404: {"model": Problem, "description": "No such workflow or version."}},
)
async def get_workflow(
    ctx: Ctx,
    name: WorkflowName,
    version: Annotated[
        int | None, Query(ge=1, le=2**31, description="Latest when omitted.")
    ] = None,
) -> WorkflowDetail:
    """One workflow's spec at a version, its versions, and its DAG (nodes and edges)."""
    compiled: CompiledSpec = await ctx.registry.get(name, version)
    latest, versions = await asyncio.gather(
        ctx.registry.latest_version(name), versions_of(ctx.registry, name)
    )
    spec = compiled.spec
    return WorkflowDetail(
        name=compiled.name,
        version=compiled.version,
        latest_version=latest or compiled.version,
        versions=versions,
        description=spec.description,
        input_schema=spec.input_schema,
        spec=redacted_spec(spec),
        dag=dag_of(compiled),
        schedules=schedules_of(spec),
        triggers=list(spec.on),
        notify=notify_of(spec),
        paused=await ctx.registry.is_paused(name),
    )


@router.post(
    "/workflows/{name}/runs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={
        400: {"model": Problem, "description": "A malformed run id."},
        404: {"model": Problem, "description": "No such workflow or version."},
        422: {"model": Problem, "description": "The input does not fit the workflow."},
        503: {"model": Problem, "description": "NATS did not acknowledge: nothing accepted."},
    },
)
async def trigger_run(
    ctx: Ctx,
    name: WorkflowName,
    response: Response,
    http: Request,
    request: Annotated[TriggerRequest | None, Body()] = None,
) -> Accepted:
    """Start a run. 202 only once JetStream acknowledged the request (nothing accepted is
    lost); an unknown workflow or an invalid input is refused before anything is published."""
    request = request or TriggerRequest()
    if request.run_id is not None and not is_token(request.run_id):
        raise HTTPException(400, f"run_id {request.run_id!r} must be 1-128 of [A-Za-z0-9_-]")
    run_id = await ctx.client.trigger(
        name,
        request.input,
        idempotency_key=request.idempotency_key,
        version=request.version,
        run_id=request.run_id,
        priority=request.priority,
        source=API_SOURCE,
        actor=f"HTTP API, from {http.client.host}" if http.client else "HTTP API",
    )
    url = f"/api/runs/{run_id}"
    response.headers["Location"] = url
    return Accepted(run_id=run_id, action="trigger", url=url)
