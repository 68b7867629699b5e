"""The webhook gateway: `POST /hooks/{name}` turns HTTP deliveries into CloudEvents on the ingest
subjects, where the trigger router starts the workflows they match.

Accepted bodies: the CloudEvents HTTP binding — binary, structured (parsed with the official
`cloudevents` SDK) and batch (`application/cloudevents-batch+json`) — or any JSON body, wrapped
into a CloudEvent of the hook's type. Answers:

    202  {"events": [{"id", "duplicate"}], "runs": [{"workflow", "run_id"}]}   only after
         JetStream acknowledged every event (nothing accepted is lost)
    400  a malformed body (says what)        401  missing or bad signature, or a replay
    404  unknown hook                        413  body over the hook's size limit
    503  JetStream unreachable
On every error nothing is published.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from cloudevents.core.bindings import http as ce_http
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from events.bus import Bus
from events.codec import decode
from events.envelope import CloudEvent
from events.errors import BusError, BusUnavailable, MalformedEvent
from orchestrator.errors import SpecError
from orchestrator.runtime.registry import Registry
from orchestrator.triggers.router import TriggerIndex
from orchestrator.triggers.webhooks.config import Hook, HooksConfig
from orchestrator.triggers.webhooks.signatures import (
    SignatureError,
    verify_bearer,
    verify_github,
    verify_standard,
)

BATCH = "application/cloudevents-batch+json"


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_gateway(
    bus: Bus, config: HooksConfig, *, clock: Callable[[], float] = time.time
) -> FastAPI:
    app = FastAPI(title="Conveyor webhook gateway", docs_url=None, redoc_url=None)
    triggers = TriggerIndex(Registry(bus))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/hooks/{name}", status_code=202)
    async def receive(name: str, request: Request) -> JSONResponse:
        try:
            hook = config.hooks.get(name)
            if hook is None:
                raise _Refused(404, f"unknown hook {name!r}")
            body = await _read_limited(request, hook.max_bytes)
            headers = dict(request.headers)
            delivery_id = _authenticate(hook, name, headers, body, clock())
            events = _events(hook, name, headers, body, delivery_id)
        except _Refused as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        published, runs = [], []
        try:
            for event in events:
                subject = bus.topology.ingest_subject(event.type)
                duplicate = await bus.publish(subject, event)
                published.append({"id": event.id, "duplicate": duplicate})
                runs += [
                    {"workflow": spec.name, "run_id": run_id}
                    for spec, run_id in await triggers.runs_for(event)
                ]
        except (BusUnavailable, BusError) as exc:
            # Events published before the failure stay published (they were acked): retrying
            # the delivery republishes them with the same ids, which JetStream drops.
            return JSONResponse(
                {"error": f"JetStream is unavailable: {exc}", "published": published},
                status_code=503,
            )
        return JSONResponse({"events": published, "runs": runs}, status_code=202)

    return app


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"body of {declared} bytes is over this hook's limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"body is over this hook's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _authenticate(
    hook: Hook, name: str, headers: dict[str, str], body: bytes, now: float
) -> str | None:
    """Verify the delivery; returns the sender's delivery id when it has one."""
    auth = hook.auth
    try:
        if auth.kind == "github":
            verify_github(headers, body, auth.resolved(auth.secret, name))
            return headers.get("x-github-delivery")
        if auth.kind == "standard":
            return verify_standard(headers, body, auth.resolved(auth.secret, name), now)
        if auth.kind == "bearer":
            verify_bearer(headers, auth.resolved(auth.token, name))
        return None
    except SignatureError as exc:
        raise _Refused(401, str(exc)) from None
    except SpecError as exc:  # a secret that vanished from the environment: our fault
        raise _Refused(503, f"hook {name!r} is misconfigured: {'; '.join(exc.problems)}") from None


def _events(
    hook: Hook, name: str, headers: dict[str, str], body: bytes, delivery_id: str | None
) -> list[CloudEvent]:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == BATCH:
            items = json.loads(body)
            if not isinstance(items, list) or not items:
                raise _Refused(400, "a batch body must be a non-empty JSON array of events")
            return [_from_sdk(_structured(item, index)) for index, item in enumerate(items)]
        if any(k.startswith("ce-") for k in headers) or content_type.startswith(
            "application/cloudevents+json"
        ):
            message = ce_http.HTTPMessage(headers=headers, body=body)
            return [_from_sdk(ce_http.from_http_event(message))]
    except _Refused:
        raise
    except Exception as exc:  # the SDK raises assorted types for bad input
        raise _Refused(400, f"not a valid CloudEvent: {exc}") from None
    try:
        data = json.loads(body) if body else None
    except ValueError as exc:
        raise _Refused(400, f"body is not JSON (and not a CloudEvent): {exc}") from None
    subject = headers.get("x-github-event")
    return [
        CloudEvent.create(
            hook.type,
            hook.source or f"webhook/{name}",
            data,
            id=delivery_id or headers.get("idempotency-key") or uuid.uuid4().hex,
            subject=subject,
        )
    ]


def _structured(item: Any, index: int) -> Any:
    if not isinstance(item, dict):
        raise _Refused(400, f"batch[{index}] is not a JSON object")
    message = ce_http.HTTPMessage(
        headers={"content-type": "application/cloudevents+json"}, body=json.dumps(item).encode()
    )
    try:
        return ce_http.from_structured_event(message)
    except Exception as exc:
        raise _Refused(400, f"batch[{index}] is not a valid CloudEvent: {exc}") from None


def _from_sdk(sdk_event: Any) -> CloudEvent:
    """The SDK's event as ours (then validated by our codec's rules)."""
    attributes = dict(sdk_event.get_attributes())
    core = {
        k: attributes.pop(k, None)
        for k in (
            "id",
            "source",
            "type",
            "specversion",
            "time",
            "subject",
            "dataschema",
            "datacontenttype",
        )
    }
    when = core["time"]
    data = sdk_event.get_data()
    content_type = core["datacontenttype"] or ("application/json" if data is not None else None)
    if data is None:
        raw = b""
    elif isinstance(data, bytes):
        raw = data
    elif isinstance(data, str) and "json" not in (content_type or ""):
        raw = data.encode()
    else:
        raw = json.dumps(data, separators=(",", ":")).encode()
    headers = {
        f"ce-{k}": str(v)
        for k, v in {
            "specversion": core["specversion"] or "1.0",
            "id": core["id"],
            "source": core["source"],
            "type": core["type"],
            "subject": core["subject"],
            "dataschema": core["dataschema"],
            "time": when.isoformat() if isinstance(when, dt.datetime) else when,
            **{name: value for name, value in attributes.items()},
        }.items()
        if v is not None
    }
    if content_type:
        headers["content-type"] = content_type
    try:
        return decode(headers, raw)
    except MalformedEvent as exc:
        raise _Refused(400, f"not a valid CloudEvent: {exc.reason}") from None
