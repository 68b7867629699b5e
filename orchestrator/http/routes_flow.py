"""/api/flow: flow control at work — every limiter holding or queueing something, every
collector holding events (docs/flow-control.md), with its counts per key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from .context import AppContext, context
from .models import FlowEntity

router = APIRouter(tags=["flow control"])
Ctx = Annotated[AppContext, Depends(context)]


@router.get("/flow", response_model=list[FlowEntity])
async def list_flow(ctx: Ctx) -> list[FlowEntity]:
    """Limiters (per limit and key: how many hold it, how many wait, the limit, the next rate
    window) and collectors (per debounced or batched workflow and key: the events held, when
    the window closes). Idle keys are not listed."""
    return [FlowEntity.model_validate(h) for h in await ctx.queries.flows()]
