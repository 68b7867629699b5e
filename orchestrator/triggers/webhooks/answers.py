"""What the webhook gateway answers and accepts, as its OpenAPI schema documents it: the bodies
of its answers (pydantic), every status a delivery can get, the request bodies and the headers
it reads. Pure data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from orchestrator.http.models import Problem


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class EventAccepted(BaseModel):
    id: str = Field(description="The event's id (`ce-id`).")
    source: str = Field(description="The event's source: with the id, what identifies it.")
    duplicate: bool = Field(
        description="JetStream already held this event (same source and id: a sender's "
        "retry). Nothing was started for it, and no run is listed for it."
    )


class RunStarted(BaseModel):
    workflow: str
    run_id: str = Field(
        description="The run this event starts (derived from the workflow, the event's source "
        "and id: the router starts it once, however often the event comes)."
    )


class Accepted(BaseModel):
    """Every event was acknowledged by JetStream: it is durable and will be routed."""

    events: list[EventAccepted]
    runs: list[RunStarted] = Field(
        description="The runs the new events start, from the workflows whose `on` filters "
        "match them (as registered when the delivery was accepted)."
    )


class Unavailable(Problem):
    published: list[EventAccepted] = Field(
        default_factory=list,
        description="Events of this delivery JetStream acknowledged before it became "
        "unavailable: a retry of the whole delivery repeats them harmlessly (duplicates).",
    )


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


RECEIVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted: every event is durably on the ingest stream."},
    400: _problem(
        "The body or an attribute is malformed: not JSON, not a valid CloudEvent (a missing or "
        "forbidden attribute value, percent-encoded bytes that are not UTF-8), a bad batch."
    ),
    401: _problem(
        "Missing or bad signature or token; a Standard Webhooks timestamp more than 5 minutes "
        "away from now (a replay)."
    ),
    404: _problem("No hook of this name."),
    413: _problem(
        "The body is over the hook's `max_bytes`, or an event is too large for one message on "
        "the bus. Nothing was published."
    ),
    422: _problem("The request cannot be read (FastAPI's validation)."),
    503: {
        "model": Unavailable,
        "description": "JetStream is unreachable, or the hook's secret is missing from the "
        "environment: retry later.",
    },
}

_ANY_STRING = {"type": "string"}
_STRUCTURED_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One CloudEvent in the JSON event format. Other members are extensions "
    "(`[a-z0-9]{1,20}`): a string, an integer or a boolean (stored as `true`/`false`).",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "subject": _ANY_STRING,
        "time": {"type": "string", "description": "RFC 3339; kept as given."},
        "datacontenttype": _ANY_STRING,
        "dataschema": _ANY_STRING,
        "data": {},
        "data_base64": {"type": "string", "format": "byte"},
    },
    "additionalProperties": {"type": ["string", "integer", "boolean"]},
}

REQUEST_BODY: dict[str, Any] = {
    "required": False,
    "description": "A plain JSON body (wrapped into a CloudEvent of the hook's type and "
    "source), or CloudEvents in the HTTP binding's binary mode (`ce-*` headers, any body), "
    "structured mode or batch mode.",
    "content": {
        "application/json": {"schema": {}},
        "application/cloudevents+json": {"schema": _STRUCTURED_EVENT},
        "application/cloudevents-batch+json": {
            "schema": {"type": "array", "minItems": 1, "items": _STRUCTURED_EVENT}
        },
    },
}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


SIGNATURE_HEADERS: list[dict[str, Any]] = [
    _header("webhook-id", "Standard Webhooks: the delivery id (the event id of a JSON body)."),
    _header("webhook-timestamp", "Standard Webhooks: unix seconds of the delivery."),
    _header("webhook-signature", "Standard Webhooks: `v1,<base64 HMAC-SHA256>`, space-separated."),
    _header("svix-id", "Svix's name for `webhook-id` (used when `webhook-id` is absent)."),
    _header("svix-timestamp", "Svix's name for `webhook-timestamp`."),
    _header("svix-signature", "Svix's name for `webhook-signature`."),
    _header("x-hub-signature-256", "GitHub: `sha256=<hex HMAC-SHA256>` of the body."),
    _header("x-github-delivery", "GitHub: the delivery id (the event id)."),
    _header("x-github-event", "GitHub: the event name (the event's subject)."),
    _header("idempotency-key", "The event id of a JSON body, when the sender has no other."),
    _header("ce-specversion", "Binary mode: `1.0`."),
    _header("ce-id", "Binary mode: the event id (percent-encoded, as every `ce-*` value)."),
    _header("ce-source", "Binary mode: the event source."),
    _header("ce-type", "Binary mode: the event type."),
    _header("ce-subject", "Binary mode: the event subject, e.g. `Z%C3%BCrich`."),
    _header("ce-time", "Binary mode: RFC 3339, kept as given."),
]
