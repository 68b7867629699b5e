"""CloudEvents <-> NATS message (headers + body): pure functions, no client library.

Encoding uses binary content mode: attributes in `ce-*` headers, data as the body with
`content-type`. Decoding also accepts structured mode (an `application/cloudevents+json`
body) so that any client, in any language, can publish. `ce-id` doubles as `Nats-Msg-Id`,
which makes JetStream drop a duplicate publish inside its duplicate window.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from events.envelope import SPEC_VERSION, CloudEvent
from events.errors import MalformedEvent

MSG_ID_HEADER = "Nats-Msg-Id"
STRUCTURED = "application/cloudevents+json"
_CORE = ("id", "source", "type", "specversion", "time", "subject", "dataschema")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}\Z")
# Names an extension cannot take: they are (or are carried in place of) core attributes.
_RESERVED = frozenset((*_CORE, "datacontenttype", "data", "data_base64"))
# Keep header values printable ASCII: nats-py hands non-ASCII back as email.header.Header
# objects, and a CR/LF would break the header block. (fullmatch: `$` also matches before "\n".)
_ASCII = re.compile(r"[\x20-\x7e]*")
# Data of these content types is a JSON value in a structured event; of others, a string.
_JSON_TYPE = re.compile(r"^(application|text)/([a-zA-Z0-9.-]+\+)?json(;.*)?$")


def encode(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """The headers and body of `event` in binary content mode."""
    headers = {
        MSG_ID_HEADER: event.id,
        "ce-specversion": event.specversion,
        "ce-id": event.id,
        "ce-source": event.source,
        "ce-type": event.type,
    }
    if event.time is not None:
        headers["ce-time"] = event.time
    if event.subject is not None:
        headers["ce-subject"] = event.subject
    if event.dataschema is not None:
        headers["ce-dataschema"] = event.dataschema
    if event.datacontenttype is not None:
        headers["content-type"] = event.datacontenttype
    for name, value in event.extensions.items():
        _check_extension_name(name)
        headers[f"ce-{name}"] = value
    for name, value in headers.items():
        if name == MSG_ID_HEADER:
            continue  # the same value as ce-id, which is checked under its own name
        if not isinstance(value, str) or not _ASCII.fullmatch(value):
            raise MalformedEvent(f"attribute {name!r} must be printable ASCII, got {value!r}")
    return headers, event.data


def header_block_size(headers: Mapping[str, str]) -> int:
    """Bytes the headers take on the wire (`NATS/1.0` line, `Name: value` lines, blank line):
    the server's max payload counts them together with the body."""
    return 12 + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 2


def decode(headers: Mapping[str, str] | None, body: bytes) -> CloudEvent:
    """Parse a message in binary or structured mode; MalformedEvent says what is wrong."""
    lowered = {k.lower(): str(v) for k, v in (headers or {}).items()}
    content_type = lowered.get("content-type", "")
    if "ce-specversion" not in lowered and content_type.startswith(STRUCTURED):
        return _decode_structured(body)
    if "ce-specversion" not in lowered:
        if body[:1] == b"{" and b'"specversion"' in body:
            return _decode_structured(body)
        raise MalformedEvent(
            "not a CloudEvent: no ce-specversion header (binary mode) and no "
            f"{STRUCTURED} body (structured mode)"
        )
    attributes = {name: lowered.get(f"ce-{name}") for name in _CORE}
    extensions = {
        key[3:]: value
        for key, value in lowered.items()
        if key.startswith("ce-") and key[3:] not in _CORE
    }
    return _build(attributes, extensions, lowered.get("content-type"), body)


def _decode_structured(body: bytes) -> CloudEvent:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise MalformedEvent(f"structured CloudEvent body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedEvent("structured CloudEvent body must be a JSON object")
    data, content_type = _structured_data(document)
    attributes = {name: document.pop(name, None) for name in _CORE}
    for name, value in attributes.items():
        if value is not None and not isinstance(value, str):
            raise MalformedEvent(f"attribute {name!r} must be a string, got {type(value).__name__}")
    return _build(attributes, _structured_extensions(document), content_type, data)


def _structured_data(document: dict[str, Any]) -> tuple[bytes, str | None]:
    """The data (as bytes) and its content type, taken out of a structured event."""
    content_type = document.pop("datacontenttype", None)
    if content_type is not None and not isinstance(content_type, str):
        raise MalformedEvent(
            f"attribute 'datacontenttype' must be a string, got {type(content_type).__name__}"
        )
    if "data_base64" in document:
        try:
            return base64.b64decode(document.pop("data_base64"), validate=True), content_type
        except (ValueError, TypeError) as exc:
            raise MalformedEvent(f"data_base64 is not valid base64: {exc}") from None
    if "data" not in document:
        return b"", content_type
    value = document.pop("data")
    if isinstance(value, str) and content_type and not _JSON_TYPE.match(content_type):
        return value.encode(), content_type  # text data (text/plain) travels as a JSON string
    return json.dumps(value, separators=(",", ":")).encode(), content_type or "application/json"


def _structured_extensions(document: dict[str, Any]) -> dict[str, str]:
    """What is left of a structured event: its extensions, in their canonical string form."""
    extensions = {}
    for name, value in document.items():
        if value is None:
            continue  # JSON format: a null attribute is the same as an absent one
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int):
            raise MalformedEvent(f"extension {name!r} must be a string, integer or boolean")
        extensions[name] = str(value)
    return extensions


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
        datacontenttype=content_type,
        data=data,
        extensions=dict(extensions),
    )


def _check_extension_name(name: str) -> None:
    # The same rule both ways: whatever decodes can be encoded again.
    if not _EXTENSION_NAME.match(name):
        raise MalformedEvent(f"extension name {name!r} must be 1-20 lowercase letters or digits")
    if name in _RESERVED:
        raise MalformedEvent(f"extension name {name!r} is reserved for a core attribute")
