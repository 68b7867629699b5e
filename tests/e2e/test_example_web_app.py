"""examples/web_app.py as its docstring runs it: the FastAPI service in a uvicorn process of its
own (its clients configured by CONVEYOR_* variables only), the orchestrator and a worker for
the example's tasks, a real nats-server, and requests over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio

from events.testing import eventually
from tests.integration.harness import Harness

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def service(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    sys.path.insert(0, str(ROOT))
    try:
        from examples import web_app
    finally:
        sys.path.remove(str(ROOT))
    await harness.start_orchestrator()
    await harness.start_worker([web_app.compose, web_app.sign])
    await harness.register(web_app.greeting)
    port = _free_port()
    log = harness.workdir / "web_app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.web_app:app", "--port", str(port)],
            cwd=ROOT,
            env=harness.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/openapi.json")).status_code == 200
                except httpx.TransportError:
                    return proc.poll() is not None  # it died: stop waiting, fail below

            await eventually(up, timeout=30, message="the example service to start")
            assert proc.poll() is None, log.read_text()
            yield http
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


async def test_trigger_wait_read_and_cancel_from_web_endpoints(
    service: httpx.AsyncClient, harness: Harness
) -> None:
    waited = await service.post("/greetings", json={"name": "Ada", "wait": True})
    assert waited.status_code == 202, waited.text
    body = waited.json()
    assert body["status"] == "succeeded"
    assert body["greeting"] == "Hello, Ada! — Conveyor"

    started = (await service.post("/greetings", json={"name": "Grace"})).json()

    async def finished() -> dict[str, object] | None:
        got = (await service.get(f"/greetings/{started['run_id']}")).json()
        return got if got.get("status") == "succeeded" else None

    read = await eventually(finished, message="the second greeting")
    assert read["greeting"] == "Hello, Grace! — Conveyor"
    # The blocking client, from a plain `def` endpoint: the run ended, so it cannot be cancelled.
    ended = await service.post(f"/greetings/{started['run_id']}/cancel")
    assert ended.status_code == 409, ended.text
    assert (await service.post("/greetings/no-such-run/cancel")).status_code == 404
    assert (await service.get("/greetings/no-such-run")).status_code == 404
    # A body that does not fit is refused.
    refused = await service.post("/greetings", json={"name": 7})
    assert refused.status_code == 422
