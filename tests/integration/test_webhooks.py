"""The webhook gateway and outbound webhooks, over real HTTP and a real nats-server.

Real clients: the official `cloudevents` SDK's HTTP binding (binary, structured), a
GitHub-style HMAC-signed delivery, a Standard Webhooks-signed delivery (with replays), a bearer
token; and a real HTTP receiver for outbound deliveries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from fastapi import FastAPI, Request, Response

from events import Bus, EmbeddedServer, Topology
from events.testing import eventually, unique_namespace
from orchestrator import workflow
from orchestrator.http.server import ApiServer
from orchestrator.triggers.webhooks import HooksConfig, create_gateway
from orchestrator.triggers.webhooks.notifier import Notifier
from orchestrator.triggers.webhooks.signatures import standard_signature, verify_standard
from tests.integration import trigger_flows as flows
from tests.integration.harness import Harness

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="  # base64("secret-key-for-tests")
HOOKS = HooksConfig.model_validate(
    {
        "hooks": {
            "orders": {
                "type": "com.shop.order.created",
                "source": "shop",
                "auth": {"kind": "standard", "secret": SECRET},
                "max_bytes": 2048,
            },
            "github": {
                "type": "com.github.event",
                "auth": {"kind": "github", "secret": "gh-s3cret"},
            },
            "ci": {"auth": {"kind": "bearer", "token": "t0ken"}},
            "open": {"type": "com.shop.order.created", "auth": {"kind": "none"}},
        }
    }
)


@pytest_asyncio.fixture
async def gateway(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)
    await harness.start_router()
    await harness.register(flows.on_order)
    app = create_gateway(harness.client.bus, HOOKS)
    async with ApiServer(app, port=0) as server, httpx.AsyncClient(base_url=server.url) as client:
        yield client


def _standard_headers(body: bytes, msg_id: str, at: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": standard_signature(SECRET, msg_id, stamp, body),
    }


async def _runs(harness: Harness, count: int) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        runs = [
            r for r in await harness.client.runs(workflow="on_order") if r["status"] == "succeeded"
        ]
        return runs if len(runs) >= count else None

    return await eventually(done, message=f"{count} on_order run(s)")


async def test_standard_webhooks_delivery_starts_a_run_and_replays_do_not(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    body = json.dumps({"order": 1}).encode()
    response = await gateway.post(
        "/hooks/orders", content=body, headers=_standard_headers(body, "msg-1")
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["events"] == [{"id": "msg-1", "source": "shop", "duplicate": False}]
    [run] = answer["runs"]
    assert run["workflow"] == "on_order"
    final = await harness.client.wait(run["run_id"], timeout=20)
    assert final["output"]["data"] == {"order": 1}
    # The same delivery again (a retry by the sender): accepted, but no second run.
    again = await gateway.post(
        "/hooks/orders", content=body, headers=_standard_headers(body, "msg-1")
    )
    assert again.status_code == 202 and again.json()["events"][0]["duplicate"] is True
    assert again.json()["runs"] == []  # it started nothing, and the answer says so
    # An old delivery replayed outside the tolerance window: refused.
    stale = await gateway.post(
        "/hooks/orders",
        content=body,
        headers=_standard_headers(body, "msg-2", int(time.time()) - 3600),
    )
    assert stale.status_code == 401 and "tolerance" in stale.json()["detail"]
    assert len(await _runs(harness, 1)) == 1


async def test_github_signed_delivery(harness: Harness, gateway: httpx.AsyncClient) -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    signature = "sha256=" + hmac.new(b"gh-s3cret", body, hashlib.sha256).hexdigest()
    headers = {
        "x-hub-signature-256": signature,
        "x-github-event": "push",
        "x-github-delivery": "gh-1",
        "content-type": "application/json",
    }
    ok = await gateway.post("/hooks/github", content=body, headers=headers)
    assert ok.status_code == 202, ok.text
    assert ok.json()["events"] == [{"id": "gh-1", "source": "webhook/github", "duplicate": False}]
    forged = await gateway.post("/hooks/github", content=body + b" ", headers=headers)
    assert forged.status_code == 401 and "does not match" in forged.json()["detail"]
    unsigned = await gateway.post("/hooks/github", content=body)
    assert (
        unsigned.status_code == 401 and "missing X-Hub-Signature-256" in unsigned.json()["detail"]
    )


async def test_cloudevents_sdk_binary_structured_and_batch(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    def sdk_event(event_id: str) -> SdkEvent:
        return SdkEvent(
            {
                "id": event_id,
                "source": "sdk/client",
                "type": "com.shop.order.created",
                "subject": event_id,
                "time": dt.datetime.now(dt.UTC),
            },
            {"via": event_id},
        )

    binary = ce_http.to_binary_event(sdk_event("b-1"))
    response = await gateway.post("/hooks/open", content=binary.body, headers=binary.headers)
    assert response.status_code == 202, response.text
    structured = ce_http.to_structured_event(sdk_event("s-1"))
    response = await gateway.post(
        "/hooks/open", content=structured.body, headers=structured.headers
    )
    assert response.status_code == 202, response.text
    batch = [json.loads(ce_http.to_structured_event(sdk_event(f"k-{i}")).body) for i in range(2)]
    response = await gateway.post(
        "/hooks/open", json=batch, headers={"content-type": "application/cloudevents-batch+json"}
    )
    assert response.status_code == 202, response.text
    assert [e["id"] for e in response.json()["events"]] == ["k-0", "k-1"]
    runs = await _runs(harness, 4)
    subjects = set()
    for run in runs:
        status = await harness.client.status(run["run_id"])
        assert status is not None
        subjects.add(status["output"]["subject"])
    assert subjects == {"b-1", "s-1", "k-0", "k-1"}


@pytest.mark.parametrize(
    ("hook", "body", "headers", "status", "message"),
    [
        ("nope", b"{}", {}, 404, "unknown hook 'nope'"),
        ("ci", b"{}", {}, 401, "missing Authorization: Bearer"),
        ("ci", b"{}", {"authorization": "Bearer wrong"}, 401, "bearer token is not valid"),
        ("ci", b"{not json", {"authorization": "Bearer t0ken"}, 400, "body is not JSON"),
        (
            "open",
            b'{"specversion": "1.0"}',
            {"content-type": "application/cloudevents+json"},
            400,
            "not a valid CloudEvent",
        ),
        (
            "open",
            b"[1]",
            {"content-type": "application/cloudevents-batch+json"},
            400,
            "batch[0] is not a JSON object",
        ),
        ("orders", b"x" * 4096, {}, 413, "over this hook's limit of 2048"),
    ],
)
async def test_bad_deliveries_are_refused_and_publish_nothing(
    harness: Harness,
    gateway: httpx.AsyncClient,
    hook: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = await gateway.post(f"/hooks/{hook}", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    ingested = await harness.client.bus.stream_messages(harness.topology.ingest_stream)
    assert ingested == []


async def test_jetstream_unreachable_is_a_503(tmp_path: Any) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "nats").start()
    bus = await Bus.connect(server.url, Topology(namespace=unique_namespace("gw")))
    await bus.apply_topology()
    app = create_gateway(bus, HOOKS)
    try:
        async with ApiServer(app, port=0) as api, httpx.AsyncClient(base_url=api.url) as client:
            server.stop()
            response = await client.post("/hooks/open", json={"order": 1})
            assert response.status_code == 503
            assert "JetStream is unavailable" in response.json()["detail"]
    finally:
        await bus.close()
        server.stop()


# ---- outbound -----------------------------------------------------------------------------------


class Receiver:
    """A real HTTP endpoint recording deliveries: fails `fail_first` times, or hangs."""

    def __init__(self, fail_first: int = 0, hang: bool = False) -> None:
        self.fail_first, self.hang = fail_first, hang
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            self.requests.append((dict(request.headers), await request.body()))
            if self.hang:
                await asyncio.sleep(30)
            if len(self.requests) <= self.fail_first:
                return Response(status_code=500)
            return Response(status_code=204)


async def test_outbound_webhooks_are_signed_retried_and_recorded(harness: Harness) -> None:
    flaky, dead = Receiver(fail_first=2), Receiver(hang=True)
    async with (
        ApiServer(flaky.app, port=0) as good_server,
        ApiServer(dead.app, port=0) as bad_server,
    ):

        @workflow(
            notify=[
                {"url": f"{good_server.url}/hook", "secret": SECRET, "on": ["succeeded"]},
                {"url": f"{bad_server.url}/hook", "max_attempts": 2, "timeout_s": 0.3},
            ]
        )
        def notified(x: int = 2) -> int:
            return flows.double(x)

        await harness.start_orchestrator()
        await harness.start_worker(flows.TASKS)
        await harness.register(notified)
        notifier = Notifier(harness.client.bus, backoff_s=0.05)
        task = asyncio.create_task(notifier.run())
        try:
            final = await harness.run(notified, {"x": 21})
            assert final["output"] == 42  # the engine never waited for the endpoints

            async def recorded() -> list[dict[str, Any]] | None:
                status = await harness.client.status(final["run_id"])
                notes = status["notifications"] if status else []
                return notes if sum(1 for n in notes if n["final"]) == 2 else None

            notes = await eventually(recorded, message="both deliveries to end")
        finally:
            notifier.stop()
            await asyncio.wait_for(task, 10)
            await notifier.drain()

    good = [n for n in notes if n["url"].startswith(good_server.url)]
    assert [(n["attempt"], n["status_code"], n["delivered"]) for n in good] == [
        (1, 500, False),
        (2, 500, False),
        (3, 204, True),
    ]
    bad = [n for n in notes if n["url"].startswith(bad_server.url)]
    assert [(n["attempt"], n["delivered"], n["final"]) for n in bad] == [
        (1, False, False),
        (2, False, True),
    ]
    assert "ReadTimeout" in bad[-1]["error"]
    headers, body = flaky.requests[-1]
    document = json.loads(body)
    assert document["type"] == "io.conveyor.run.succeeded" and document["data"]["output"] == 42
    assert headers["content-type"] == "application/cloudevents+json"
    assert len({h["webhook-id"] for h, _ in flaky.requests}) == 1  # stable across retries
    verify_standard(headers, body, SECRET, time.time())  # the receiver can check the signature
