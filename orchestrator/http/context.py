"""What every route needs, passed to `create_app` and kept on `app.state.ctx` (no globals)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from orchestrator.client import Client
from orchestrator.runtime.queries import Queries
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.store import Store

from .live import Live


@dataclass(slots=True)
class AppContext:
    store: Store
    client: Client
    registry: Registry
    queries: Queries
    live: Live


def context(request: Request) -> AppContext:
    """FastAPI dependency: the app's context."""
    ctx: AppContext = request.app.state.ctx
    return ctx
