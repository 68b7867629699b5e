"""Triggering a workflow from a web service (FastAPI): the async `Client` in `async def` endpoints,
the blocking `SyncClient` in plain `def` ones (FastAPI runs those on a thread pool — as Flask and
Django run every view).

    conveyor dev examples/web_app.py                       # NATS, orchestrator, worker, dashboard
    uvicorn examples.web_app:app --port 8000               # this service, in another terminal
    curl -X POST localhost:8000/greetings -H 'content-type: application/json' -d '{"name": "Ada"}'
    curl localhost:8000/greetings/<run_id>

The clients read where NATS is from CONVEYOR_NATS_URL, conveyor.toml or the default
nats://127.0.0.1:4222 (what `conveyor dev` serves).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from orchestrator import Client, InvalidInput, RunRefused, SyncClient, UnknownRun, workflow
from workers import task

# ---- the workflow (any module would do: it lives here to keep the example in one file) --------


@task
def compose(name: str) -> str:
    return f"Hello, {name}!"


@task
def sign(text: str, signature: str) -> str:
    return f"{text} — {signature}"


@workflow
def greeting(name: str, signature: str = "Conveyor") -> str:
    return sign(compose(name), signature)


# ---- the service -------------------------------------------------------------------------------


class GreetingRequest(BaseModel):
    name: str
    wait: bool = False  # answer with the greeting itself, once the run finished


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client of each kind for the whole service (each holds a NATS connection), made at
    # start-up: both are safe to share between requests and threads.
    app.state.conveyor = await Client.connect()
    app.state.sync_conveyor = await asyncio.to_thread(SyncClient)
    try:
        yield
    finally:
        await app.state.conveyor.close()
        await asyncio.to_thread(app.state.sync_conveyor.close)


app = FastAPI(title="greetings", lifespan=lifespan)


@app.post("/greetings", status_code=202)
async def create(request: GreetingRequest) -> dict[str, Any]:
    client: Client = app.state.conveyor
    try:
        # Returns once JetStream holds the request: the run will happen even if we crash now.
        run_id = await client.trigger("greeting", {"name": request.name})
    except InvalidInput as exc:
        raise HTTPException(422, exc.problems) from None
    if not request.wait:
        return {"run_id": run_id}
    final = await client.wait(run_id, timeout=30)
    return {"run_id": run_id, "status": final["status"], "greeting": final["output"]}


@app.get("/greetings/{run_id}")
async def read(run_id: str) -> dict[str, Any]:
    status = await app.state.conveyor.status(run_id)
    if status is None:
        raise HTTPException(404, f"no run {run_id}")
    return {"run_id": run_id, "status": status["status"], "greeting": status["output"]}


@app.post("/greetings/{run_id}/cancel", status_code=202)
def cancel(run_id: str) -> dict[str, str]:
    """A plain `def` endpoint: the blocking client, as a Flask or Django view would use it."""
    client: SyncClient = app.state.sync_conveyor
    try:
        client.cancel(run_id, "cancelled by the greetings service")
    except UnknownRun:
        raise HTTPException(404, f"no run {run_id}") from None
    except RunRefused as exc:  # it already ended
        raise HTTPException(409, exc.reason) from None
    return {"run_id": run_id, "status": "cancel requested"}
