"""CloudEvents <-> NATS message (headers + body): pure functions, no client library.

Encoding uses binary content mode: attributes in `ce-*` headers (percent-encoded as the
CloudEvents NATS and HTTP bindings ask: `events.attributes`), data as the body with
`content-type`. Decoding also accepts structured mode (an `application/cloudevents+json` body) so
that any client, in any language, can publish — and the webhook gateway decodes HTTP requests
with the same functions, so an event reads the same through either door.

`Nats-Msg-Id` is the event's key (`events.ids.event_key`: its `source` and `id` together, which
is what identifies a CloudEvent): JetStream drops a repeat publish of the same event inside its
duplicate window, and only that — the same id from another source is another event.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from events.attributes import canonical, check_media_type, check_value, from_header, to_header
from events.envelope import SPEC_VERSION, CloudEvent, strict_json
from events.errors import MalformedEvent
from events.ids import event_key

MSG_ID_HEADER = "Nats-Msg-Id"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_CORE = ("id", "source", "type", "specversion", "time", "subject", "dataschema")
_CORE_NAMES = frozenset(_CORE)
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}\Z")
# Names an extension cannot take: they are (or are carried in place of) core attributes.
_RESERVED = frozenset((*_CORE, "datacontenttype", "data", "data_base64"))
# Data of these content types is a JSON value in a structured event; of others, a string.
_JSON_TYPE = re.compile(r"^(application|text)/([a-zA-Z0-9.-]+\+)?json(;.*)?$")


def encode(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """The headers and body of `event` in binary content mode."""
    attributes: dict[str, str | None] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": event.time,
        "subject": event.subject,
        "dataschema": event.dataschema,
    }
    for extension, given in event.extensions.items():
        _check_extension_name(extension)
        attributes[extension] = given
    headers: dict[str, str] = {}
    for name, value in attributes.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise MalformedEvent(f"attribute {name!r} must be a string, got {type(value).__name__}")
        headers[f"ce-{name}"] = to_header(name, value)
    if event.datacontenttype is not None:
        headers["content-type"] = check_media_type(event.datacontenttype)
    headers[MSG_ID_HEADER] = event_key(event.source, event.id)
    return headers, event.data


def header_block_size(headers: Mapping[str, str]) -> int:
    """Bytes the headers take on the wire (`NATS/1.0` line, `Name: value` lines, blank line):
    the server's max payload counts them together with the body."""
    return 12 + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 2


def decode(headers: Mapping[str, str] | None, body: bytes) -> CloudEvent:
    """Parse a message in binary or structured mode; MalformedEvent says what is wrong."""
    lowered = {k.lower(): str(v) for k, v in (headers or {}).items()}
    content_type = lowered.get("content-type", "")
    if "ce-specversion" not in lowered:
        if content_type.lower().startswith("application/cloudevents"):
            return _decode_structured_of_type(content_type, body)
        if body[:1] == b"{" and b'"specversion"' in body:
            return decode_structured(body)
        raise MalformedEvent(
            "not a CloudEvent: no ce-specversion header (binary mode) and no "
            f"{STRUCTURED} body (structured mode)"
        )
    attributes: dict[str, str] = {}
    extensions: dict[str, str] = {}
    # `ce-datacontenttype` is the NATS binding's name for it; the HTTP binding (and we) write
    # `content-type`.
    given_type = None
    for key, raw in lowered.items():
        if not key.startswith("ce-"):
            continue
        name = key[3:]
        value = from_header(name, raw)
        if name in _CORE_NAMES:
            attributes[name] = value
        elif name == "datacontenttype":
            given_type = value
        else:
            extensions[name] = value
    return _build(attributes, extensions, given_type or lowered.get("content-type"), body)


def decode_structured(body: bytes) -> CloudEvent:
    """One event in the JSON event format (structured mode)."""
    try:
        document = strict_json(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise MalformedEvent(f"structured CloudEvent body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedEvent("structured CloudEvent body must be a JSON object")
    return _from_document(document)


def decode_batch(body: bytes) -> list[CloudEvent]:
    """The events of a batch (`application/cloudevents-batch+json`: a JSON array of events);
    MalformedEvent names the first one that is not valid (`batch[2]: ...`)."""
    try:
        items = strict_json(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedEvent(f"batch body is not JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise MalformedEvent("a batch body must be a non-empty JSON array of events")
    events = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedEvent(f"batch[{index}] is not a JSON object")
        try:
            events.append(_from_document(item))
        except MalformedEvent as exc:
            raise MalformedEvent(f"batch[{index}]: {exc.reason}") from None
    return events


def _decode_structured_of_type(content_type: str, body: bytes) -> CloudEvent:
    media = content_type.split(";")[0].strip().lower()
    if media != STRUCTURED:
        raise MalformedEvent(
            f"structured mode in {media!r} is not supported: send {STRUCTURED} (one event) or "
            "binary mode"
        )
    return decode_structured(body)


def _from_document(document: dict[str, Any]) -> CloudEvent:
    document = dict(document)
    data, content_type = _structured_data(document)
    attributes = {name: document.pop(name, None) for name in _CORE}
    for name, value in attributes.items():
        if value is not None and not isinstance(value, str):
            raise MalformedEvent(f"attribute {name!r} must be a string, got {type(value).__name__}")
        if value is not None:
            check_value(name, value)
    return _build(attributes, _structured_extensions(document), content_type, data)


def _structured_data(document: dict[str, Any]) -> tuple[bytes, str | None]:
    """The data (as bytes) and its content type, taken out of a structured event."""
    content_type = document.pop("datacontenttype", None)
    if content_type is not None and not isinstance(content_type, str):
        raise MalformedEvent(
            f"attribute 'datacontenttype' must be a string, got {type(content_type).__name__}"
        )
    if "data_base64" in document:
        if "data" in document:
            raise MalformedEvent("a structured event has either data or data_base64, not both")
        try:
            return base64.b64decode(document.pop("data_base64"), validate=True), content_type
        except (ValueError, TypeError) as exc:
            raise MalformedEvent(f"data_base64 is not valid base64: {exc}") from None
    if "data" not in document:
        return b"", content_type
    value = document.pop("data")
    if isinstance(value, str) and content_type and not _JSON_TYPE.match(content_type):
        # Text data (text/plain) travels as a JSON string; lone surrogates cannot be bytes.
        return value.encode("utf-8", "replace"), content_type
    return _json_bytes(value), content_type or "application/json"


def _json_bytes(value: Any) -> bytes:
    # ASCII-only JSON (the default): a JSON string may hold a lone surrogate (`"\ud800"`),
    # which UTF-8 cannot carry; escaped, it stays the same JSON value.
    return json.dumps(value, separators=(",", ":")).encode()


def _structured_extensions(document: dict[str, Any]) -> dict[str, str]:
    """What is left of a structured event: its extensions, in their canonical string form."""
    return {
        name: canonical(name, value)
        for name, value in document.items()
        if value is not None  # JSON format: a null attribute is the same as an absent one
    }


def _build(
    attributes: Mapping[str, Any],
    extensions: Mapping[str, str],
    content_type: str | None,
    data: bytes,
) -> CloudEvent:
    for required in ("id", "source", "type", "specversion"):
        if not attributes.get(required):
            raise MalformedEvent(f"required attribute {required!r} is missing or empty")
    if attributes["specversion"] != SPEC_VERSION:
        raise MalformedEvent(
            f"specversion {attributes['specversion']!r} is not supported "
            f"(expected {SPEC_VERSION!r})"
        )
    for name in extensions:
        _check_extension_name(name)
    return CloudEvent(
        id=attributes["id"],
        source=attributes["source"],
        type=attributes["type"],
        specversion=attributes["specversion"],
        time=attributes.get("time"),
        subject=attributes.get("subject"),
        dataschema=attributes.get("dataschema"),
        datacontenttype=None if content_type is None else check_media_type(content_type),
        data=data,
        extensions=dict(extensions),
    )


def _check_extension_name(name: str) -> None:
    # The same rule both ways: whatever decodes can be encoded again.
    if not _EXTENSION_NAME.match(name):
        raise MalformedEvent(f"extension name {name!r} must be 1-20 lowercase letters or digits")
    if name in _RESERVED:
        raise MalformedEvent(f"extension name {name!r} is reserved for a core attribute")
