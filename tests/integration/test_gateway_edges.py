"""The webhook gateway at its edges, over real HTTP and a real nats-server: CloudEvents identity
(source + id), percent-encoded and any-Unicode attributes, canonical extension values, honest
answers (no run for a duplicate, every error a documented `Problem`), Svix's header names with
third-party signers (`standardwebhooks`, `svix`), and deliveries too large for the bus."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import standardwebhooks
import svix.webhooks
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from orchestrator import workflow
from orchestrator.http.server import ApiServer
from orchestrator.triggers.webhooks import HooksConfig, create_gateway
from orchestrator.triggers.webhooks.signatures import standard_signature
from tests.integration import trigger_flows as flows
from tests.integration.harness import Harness

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="  # base64("secret-key-for-tests")
HOOKS = HooksConfig.model_validate(
    {
        "hooks": {
            "open": {"type": "com.shop.order.created", "auth": {"kind": "none"}},
            "signed": {
                "type": "com.shop.order.created",
                "source": "shop",
                "auth": {"kind": "standard", "secret": SECRET},
            },
            "big": {
                "type": "com.shop.order.created",
                "auth": {"kind": "none"},
                "max_bytes": 4 * 1024 * 1024,
            },
        }
    }
)


@workflow(
    on={"all": [{"exact": {"type": "com.shop.order.flagged"}}, {"exact": {"urgent": "true"}}]}
)
def urgent_orders(event: dict[str, Any]) -> dict[str, Any]:
    return flows.describe(event)


@pytest_asyncio.fixture
async def gateway(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)
    await harness.start_router()
    await harness.register(flows.on_order, urgent_orders)
    app = create_gateway(harness.client.bus, HOOKS)
    async with ApiServer(app, port=0) as server, httpx.AsyncClient(base_url=server.url) as client:
        yield client


async def _output(harness: Harness, run_id: str) -> Any:
    return (await harness.client.wait(run_id, timeout=30))["output"]


def _structured(**fields: Any) -> bytes:
    base = {"specversion": "1.0", "type": "com.shop.order.created", "source": "s", "id": "e"}
    return json.dumps({**base, **fields}).encode()


STRUCTURED = {"content-type": "application/cloudevents+json"}


# ---- identity -------------------------------------------------------------------------------


async def test_the_same_id_from_two_sources_is_two_events_each_with_its_run(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    answers = []
    for source in ("shop/eu", "shop/us"):
        body = _structured(source=source, id="order-1", subject=source, data={"from": source})
        response = await gateway.post("/hooks/open", content=body, headers=STRUCTURED)
        assert response.status_code == 202, response.text
        answers.append(response.json())
    assert [a["events"][0]["duplicate"] for a in answers] == [False, False]
    run_ids = {a["runs"][0]["run_id"] for a in answers}
    assert len(run_ids) == 2
    # Every run id the gateway answered exists (on main the second one never did).
    subjects = {(await _output(harness, run_id))["subject"] for run_id in run_ids}
    assert subjects == {"shop/eu", "shop/us"}


async def test_a_duplicate_says_so_and_lists_no_run(gateway: httpx.AsyncClient) -> None:
    body = _structured(id="order-2")
    first = (await gateway.post("/hooks/open", content=body, headers=STRUCTURED)).json()
    again = (await gateway.post("/hooks/open", content=body, headers=STRUCTURED)).json()
    assert first["events"] == [{"id": "order-2", "source": "s", "duplicate": False}]
    assert len(first["runs"]) == 1
    assert again == {"events": [{"id": "order-2", "source": "s", "duplicate": True}], "runs": []}


# ---- attributes -----------------------------------------------------------------------------


async def test_a_percent_encoded_subject_is_decoded(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "z-1",
        "ce-source": "sensors/z%C3%BCrich",
        "ce-type": "com.shop.order.created",
        "ce-subject": "Z%C3%BCrich",
        "content-type": "application/json",
    }
    response = await gateway.post("/hooks/open", content=b'{"t": 21}', headers=headers)
    assert response.status_code == 202, response.text  # on main: 500
    assert response.json()["events"][0]["source"] == "sensors/z\u00fcrich"
    [run] = response.json()["runs"]
    assert (await _output(harness, run["run_id"]))["subject"] == "Z\u00fcrich"


async def test_the_sdk_sends_any_unicode_and_it_arrives_as_sent(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    subject = 'Gr\u00fc\u00dfe "aus" 100% \u6771\u4eac \U0001f600'
    event = SdkEvent(
        {"id": "u-1", "source": "sdk", "type": "com.shop.order.created", "subject": subject},
        {"n": 1},
    )
    message = ce_http.to_binary_event(event)
    response = await gateway.post("/hooks/open", content=message.body, headers=message.headers)
    assert response.status_code == 202, response.text
    [run] = response.json()["runs"]
    assert (await _output(harness, run["run_id"]))["subject"] == subject


async def test_a_boolean_extension_is_true_through_the_gateway_as_on_the_bus(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    body = _structured(type="com.shop.order.flagged", id="f-1", urgent=True, data={"n": 1})
    response = await gateway.post("/hooks/open", content=body, headers=STRUCTURED)
    assert response.status_code == 202, response.text
    # Stored as the canonical `true`, the filter {"exact": {"urgent": "true"}} matches.
    [run] = response.json()["runs"]
    assert run["workflow"] == "urgent_orders"
    run_id = run["run_id"]
    await _output(harness, run_id)
    status = await harness.client.status(run_id)
    assert status is not None
    assert status["input"]["event"]["extensions"] == {"urgent": "true"}


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"ce-subject": "a%0Ab"}, b"{}", "attribute 'subject' holds U+000A"),
        ({"ce-subject": "%C0%A0"}, b"{}", "percent-encoded bytes are not UTF-8"),
        ({"ce-id": ""}, b"{}", "required attribute 'id' is missing"),
        ({"ce-runId": "x", "ce-run_id": "y"}, b"{}", "must be 1-20 lowercase letters"),
        ({"content-type": "application/cloudevents+json"}, b"{", "not JSON"),
        ({"content-type": "application/cloudevents+json"}, b'{"a": NaN}', "NaN is not"),
        ({"content-type": "application/cloudevents+avro"}, b"x", "is not supported"),
        ({}, b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        ({}, b'{"n": Infinity}', "Infinity is not a JSON value"),
    ],
)
async def test_malformed_input_is_a_400_problem(
    harness: Harness,
    gateway: httpx.AsyncClient,
    headers: dict[str, str],
    body: bytes,
    message: str,
) -> None:
    ce = {"ce-specversion": "1.0", "ce-id": "m", "ce-source": "s", "ce-type": "t"}
    sent = {**ce, **headers} if any(k.startswith("ce-") for k in headers) else headers
    response = await gateway.post("/hooks/big", content=body, headers=sent)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert set(problem) == {"detail", "problems"} and message in problem["detail"]
    assert await harness.client.bus.stream_messages(harness.topology.ingest_stream) == []


# ---- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("GET", "/hooks/open", 405), ("POST", "/hooks/nope", 404)],
)
async def test_every_error_is_a_problem(
    gateway: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await gateway.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"detail", "problems"}


async def test_an_event_too_large_for_the_bus_is_a_413_and_publishes_nothing(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    big = json.dumps({"blob": "x" * (2 * 1024 * 1024)}).encode()  # under the hook's 4 MiB
    response = await gateway.post("/hooks/big", content=big)
    assert response.status_code == 413, response.text  # on main: 503, as if NATS were down
    assert "over the bus's limit" in response.json()["detail"]
    batch = [
        json.loads(_structured(id="small")),
        json.loads(_structured(id="huge", data=big.decode())),
    ]
    response = await gateway.post(
        "/hooks/big", json=batch, headers={"content-type": "application/cloudevents-batch+json"}
    )
    assert response.status_code == 413 and "'huge'" in response.json()["detail"]
    assert await harness.client.bus.stream_messages(harness.topology.ingest_stream) == []


async def test_an_event_type_of_any_length_is_accepted(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    long_type = "com.example." + "x" * 5000
    for index in range(2):  # the second proves the connection survived the first
        body = _structured(type=long_type, id=f"long-{index}")
        response = await gateway.post("/hooks/open", content=body, headers=STRUCTURED)
        assert response.status_code == 202, response.text  # on main: the connection closed
    assert not harness.client.bus.is_closed


# ---- Svix and Standard Webhooks, signed by their own libraries ----------------------------


async def test_svix_header_names_signed_by_the_svix_library(
    harness: Harness, gateway: httpx.AsyncClient
) -> None:
    body = json.dumps({"order": "svix"})
    now = dt.datetime.now(dt.UTC)
    signature = svix.webhooks.Webhook(SECRET).sign("msg_svix1", now, body)
    headers = {
        "svix-id": "msg_svix1",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }
    response = await gateway.post("/hooks/signed", content=body, headers=headers)
    assert response.status_code == 202, response.text  # on main: 401, missing webhook-id
    assert response.json()["events"] == [{"id": "msg_svix1", "source": "shop", "duplicate": False}]
    [run] = response.json()["runs"]
    assert (await _output(harness, run["run_id"]))["data"] == {"order": "svix"}
    forged = {**headers, "svix-signature": signature[:-4] + "AAA="}
    refused = await gateway.post("/hooks/signed", content=body, headers=forged)
    assert refused.status_code == 401 and "no webhook-signature matches" in refused.json()["detail"]


async def test_standard_webhooks_signed_by_the_standardwebhooks_library(
    gateway: httpx.AsyncClient,
) -> None:
    body = json.dumps({"order": "std"})
    now = dt.datetime.now(dt.UTC)
    unpadded = SECRET.rstrip("=")  # a secret without base64 padding is the same key
    signature = standardwebhooks.Webhook(unpadded).sign("msg_std1", now, body)
    headers = {
        "webhook-id": "msg_std1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": f"v1a,c29tZXRoaW5nIGVsc2U= {signature}",  # another scheme first
        "content-type": "application/json",
    }
    response = await gateway.post("/hooks/signed", content=body, headers=headers)
    assert response.status_code == 202, response.text
    # Our outbound signer's deliveries verify with the library too (the notifier's format).
    stamp = int(time.time())
    ours = standard_signature(SECRET, "msg_out", stamp, body.encode())
    standardwebhooks.Webhook(SECRET).verify(
        body, {"webhook-id": "msg_out", "webhook-timestamp": str(stamp), "webhook-signature": ours}
    )
