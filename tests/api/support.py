"""Fixtures for the API and dashboard tests: a real nats-server, the orchestrator and a worker
in-process (tests.integration.harness), and the HTTP app served by uvicorn on a free port.
Tests talk to it over real HTTP (httpx), never through an in-process test client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from events import EmbeddedServer, Topology
from events.testing import eventually
from orchestrator.http import ApiServer, create_app
from orchestrator.runtime.store import Store
from tests.api import flows
from tests.integration.harness import Harness

TOKEN = "test-token-5b1f0c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class ApiEnv:
    harness: Harness
    server: ApiServer
    http: httpx.AsyncClient  # sends the token
    anon: httpx.AsyncClient  # sends none

    @property
    def url(self) -> str:
        return self.server.url

    async def trigger(
        self, workflow: str, input: dict[str, Any] | None = None, **extra: Any
    ) -> str:
        response = await self.http.post(
            f"/api/workflows/{workflow}/runs", json={"input": input or {}, **extra}
        )
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    async def run(self, run_id: str) -> dict[str, Any] | None:
        response = await self.http.get(f"/api/runs/{run_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def wait(
        self, run_id: str, statuses: set[str] = TERMINAL, timeout: float = 30.0
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            run = await self.run(run_id)
            return run if run is not None and run["status"] in statuses else None

        return await eventually(
            probe, timeout=timeout, message=f"run {run_id} to be {'/'.join(sorted(statuses))}"
        )

    async def wait_node(
        self, run_id: str, node: str, status: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            run = await self.run(run_id)
            return run if run is not None and run["nodes"][node]["status"] == status else None

        return await eventually(
            probe, timeout=timeout, message=f"node {node} of run {run_id} to be {status}"
        )


@asynccontextmanager
async def serving(
    harness: Harness, *, token: str | None = TOKEN, store: Store | None = None
) -> AsyncIterator[ApiEnv]:
    """The app over the orchestrator's store (or `store`), served on a free port."""
    if store is None:
        assert harness.engine is not None, "start the orchestrator first"
        store = harness.engine.store
    app = create_app(store=store, client=harness.client, token=token, dev=token is None)
    async with (
        ApiServer(app, port=0) as server,
        httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as http,
        httpx.AsyncClient(base_url=server.url, timeout=30) as anon,
    ):
        yield ApiEnv(harness, server, http, anon)


@pytest_asyncio.fixture
async def harness(
    nats_server: EmbeddedServer, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    h = await Harness(nats_server, topology, tmp_path).open()
    try:
        yield h
    finally:
        await h.close()


@pytest_asyncio.fixture
async def api(harness: Harness) -> AsyncIterator[ApiEnv]:
    """Orchestrator + worker for tests.api.flows + the API (token auth)."""
    await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)
    await harness.register(*flows.WORKFLOWS)
    async with serving(harness) as env:
        yield env


class SseReader:
    """Reads a text/event-stream response event by event (name, data, id)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> tuple[str, Any, str | None]:
        name, data, event_id = "message", [], None
        async for line in self._lines:
            if line == "":
                if data:
                    return name, json.loads("\n".join(data)), event_id
                name, event_id = "message", None
                continue
            if line.startswith(":"):
                continue  # keep-alive comment
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
        raise AssertionError("the event stream ended")

    async def until(self, name: str, timeout: float = 20.0) -> tuple[Any, str | None]:
        """The data and id of the next event called `name` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                got, data, event_id = await self.next()
                if got == name:
                    return data, event_id
