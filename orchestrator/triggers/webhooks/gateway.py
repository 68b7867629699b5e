"""The webhook gateway: `POST /hooks/{name}` turns HTTP deliveries into CloudEvents on the ingest
subjects, where the trigger router starts the workflows they match.

Accepted bodies, decoded by `events.codec` — the functions that decode events off the bus, so an
event reads the same through either door (attributes percent-decoded, extension values in their
canonical string forms):
- the CloudEvents HTTP binding: binary mode (`ce-*` headers), structured mode
  (`application/cloudevents+json`) and batch mode (`application/cloudevents-batch+json`);
- any JSON body, wrapped into a CloudEvent of the hook's type and source whose id is the
  sender's delivery id (`webhook-id` / `svix-id`, `X-GitHub-Delivery`, `Idempotency-Key`), so a
  sender's retry is the same event.

Every answer is documented in the OpenAPI schema (`/openapi.json`); errors are `Problem`s:

    202  every event acknowledged by JetStream (nothing accepted is lost); `duplicate: true` for
         an event JetStream already held (same source and id): it started nothing, and no run
         is listed for it
    400  a malformed body or attribute (says what)   401  missing or bad signature, or a replay
    404  unknown hook   413  body over the hook's limit, or an event too large for the bus
    503  JetStream unreachable: retry (what was published is listed, and a retry repeats it
         harmlessly)
On every error but 503 nothing is published.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from events.bus import Bus
from events.codec import BATCH, decode, decode_batch, encode, header_block_size
from events.envelope import CloudEvent, strict_json
from events.errors import BusError, MalformedEvent
from orchestrator.errors import SpecError
from orchestrator.http.app import install_problem_handlers, problem
from orchestrator.runtime.registry import Registry
from orchestrator.triggers.router import TriggerIndex
from orchestrator.triggers.webhooks.answers import (
    RECEIVE_RESPONSES,
    REQUEST_BODY,
    SIGNATURE_HEADERS,
    Accepted,
    EventAccepted,
    Health,
    RunStarted,
    Unavailable,
)
from orchestrator.triggers.webhooks.config import Hook, HooksConfig
from orchestrator.triggers.webhooks.signatures import (
    SignatureError,
    verify_bearer,
    verify_github,
    verify_standard,
)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_gateway(
    bus: Bus, config: HooksConfig, *, clock: Callable[[], float] = time.time
) -> FastAPI:
    app = FastAPI(
        title="Conveyor webhook gateway",
        version="0.1.0",
        summary="HTTP deliveries in, CloudEvents on the ingest subjects out.",
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    triggers = TriggerIndex(Registry(bus))

    @app.get("/healthz")
    async def healthz() -> Health:
        return Health()

    @app.post(
        "/hooks/{name}",
        status_code=202,
        response_model=Accepted,
        responses=RECEIVE_RESPONSES,
        openapi_extra={"requestBody": REQUEST_BODY, "parameters": SIGNATURE_HEADERS},
        summary="Deliver a webhook or CloudEvents to the hook `name`",
    )
    async def receive(name: str, request: Request) -> JSONResponse:
        try:
            hook = config.hooks.get(name)
            if hook is None:
                raise _Refused(404, f"unknown hook {name!r}")
            body = await _read_limited(request, hook.max_bytes)
            headers = _headers(request)
            delivery_id = _authenticate(hook, name, headers, body, clock())
            events = _events(hook, name, headers, body, delivery_id)
            messages = [_encoded(event, bus.max_payload) for event in events]
        except _Refused as exc:
            return problem(exc.status, exc.message)
        return await _publish(bus, triggers, events, messages)

    return app


async def _publish(
    bus: Bus,
    triggers: TriggerIndex,
    events: list[CloudEvent],
    messages: list[tuple[dict[str, str], bytes]],
) -> JSONResponse:
    """Publish each event (binary mode, on its ingest subject); 202 once JetStream acked all."""
    published: list[EventAccepted] = []
    starting: list[CloudEvent] = []  # a duplicate started nothing: no run is listed for it
    try:
        for event, (headers, body) in zip(events, messages, strict=True):
            subject = bus.topology.ingest_subject(event.type)
            duplicate = await bus.publish_raw(subject, headers, body)
            published.append(EventAccepted(id=event.id, source=event.source, duplicate=duplicate))
            if not duplicate:
                starting.append(event)
        if starting:
            await triggers.refresh()  # once, after publishing: as the router will see it, or newer
    except BusError as exc:
        # Events published before the failure stay published (they were acked): retrying the
        # delivery republishes them with the same source and id, which JetStream drops. (A
        # connection closed for good ends the process; the retry reaches a fresh one.)
        answer = Unavailable(
            detail=f"JetStream is unavailable: {exc}", published=published
        ).model_dump()
        return JSONResponse(answer, status_code=503, headers={"retry-after": "5"})
    runs = [
        RunStarted(workflow=spec.name, run_id=run_id)
        for event in starting
        for spec, run_id in triggers.runs_for(event)
    ]
    return JSONResponse(Accepted(events=published, runs=runs).model_dump(), status_code=202)


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


def _headers(request: Request) -> dict[str, str]:
    """The request's headers, names in lower case. Values are ASCII by the HTTP binding's rule
    (percent-encoded); raw UTF-8 from a lax sender is read as UTF-8, not as Latin-1."""
    out = {}
    for raw_name, raw_value in request.headers.raw:
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        out[raw_name.decode("latin-1").lower()] = value
    return out


def _authenticate(
    hook: Hook, name: str, headers: Mapping[str, str], body: bytes, now: float
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
    hook: Hook, name: str, headers: Mapping[str, str], body: bytes, delivery_id: str | None
) -> list[CloudEvent]:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == BATCH:
            return decode_batch(body)
        if content_type.startswith("application/cloudevents") or any(
            k.startswith("ce-") for k in headers
        ):
            return [decode(headers, body)]
        return [_wrapped(hook, name, headers, body, delivery_id)]
    except MalformedEvent as exc:
        raise _Refused(400, f"not a valid CloudEvent: {exc.reason}") from None


def _wrapped(
    hook: Hook, name: str, headers: Mapping[str, str], body: bytes, delivery_id: str | None
) -> CloudEvent:
    """A plain JSON delivery as a CloudEvent of the hook's type (MalformedEvent if it cannot
    be one: an id or subject header holding what no attribute may)."""
    try:
        data = strict_json(body) if body else None
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise _Refused(400, f"body is not JSON (and not a CloudEvent): {exc}") from None
    event = CloudEvent.create(
        hook.type,
        hook.source or f"webhook/{name}",
        data,
        id=delivery_id or headers.get("idempotency-key") or uuid.uuid4().hex,
        subject=headers.get("x-github-event"),
    )
    encode(event)  # the same checks as on the way out: a bad header value is a 400, not a 500
    return event


def _encoded(event: CloudEvent, max_payload: int) -> tuple[dict[str, str], bytes]:
    """The message an event becomes, checked against the bus's limit before anything is sent
    (so a batch is published whole or not at all)."""
    headers, body = encode(event)
    size = header_block_size(headers) + len(body)
    if size > max_payload:
        raise _Refused(
            413,
            f"event {event.id!r} is {size} bytes as a message, over the bus's limit of "
            f"{max_payload} (send large data by reference)",
        )
    return headers, body
