"""Attribute values in headers and the identity of an event, with the official `cloudevents` SDK
(2.x, `cloudevents.core`) as the reference: any Unicode value travels both ways, percent-encoded
as the CloudEvents NATS and HTTP bindings ask; extension values take their canonical string
forms; an event is identified by `source` and `id` together."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from hypothesis import given
from hypothesis import strategies as st

from events.attributes import from_header, to_header
from events.codec import MSG_ID_HEADER, STRUCTURED, decode, encode
from events.envelope import CloudEvent
from events.errors import MalformedEvent
from events.ids import event_key

REQUIRED = {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "tests", "ce-type": "t.x"}


def _allowed(text: str) -> bool:
    return not any(0xFDD0 <= ord(c) <= 0xFDEF or ord(c) & 0xFFFE == 0xFFFE for c in text)


_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=30).filter(
    _allowed
)
_NAMES = st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True).filter(
    lambda n: (
        n not in {"id", "source", "type", "specversion", "time", "subject", "data"}
        and not n.startswith("data")
    )
)
# Hypothesis takes naive bounds and attaches the time zone itself.
_EARLIEST, _LATEST = dt.datetime(1970, 1, 1), dt.datetime(2200, 1, 1)  # noqa: DTZ001
_TIMES = st.none() | st.datetimes(_EARLIEST, _LATEST, timezones=st.just(dt.UTC))


# ---- header values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("Z\u00fcrich", "Z%C3%BCrich"),
        ("Euro \u20ac \U0001f600", "Euro%20%E2%82%AC%20%F0%9F%98%80"),  # the binding's example
        ('say "hi"', "say%20%22hi%22"),
        ("100%", "100%25"),
        ("conveyor/orchestrator", "conveyor/orchestrator"),  # printable ASCII stays as it is
        ("", ""),
    ],
)
def test_values_are_percent_encoded_as_the_binding_asks(value: str, header: str) -> None:
    assert to_header("subject", value) == header
    assert from_header("subject", header) == value


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("z%c3%bcrich", "z\u00fcrich"),  # lower-case hex
        ("%41bc", "Abc"),  # needless encoding
        ('"a b \\" c"', 'a b " c'),  # a double-quoted value from an older sender
        ("  padded\t", "padded"),  # whitespace around the value is not part of it
        ("50% off", "50% off"),  # a `%` that starts no escape stays as it is
        ("%zz%", "%zz%"),
        ("Z\u00fcrich", "Z\u00fcrich"),  # raw UTF-8 from a lax sender
    ],
)
def test_decoding_is_lenient_where_the_binding_allows(header: str, value: str) -> None:
    assert from_header("subject", header) == value


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("%C0%A0", "percent-encoded bytes are not UTF-8"),  # overlong U+0020: MUST be rejected
        ("%FF", "percent-encoded bytes are not UTF-8"),
        ("%ED%A0%80", "percent-encoded bytes are not UTF-8"),  # a surrogate
        ("a%0Ab", "holds U+000A at position 1"),
        ("%C2%85", "holds U+0085 at position 0"),
        ("%EF%BF%BF", "holds U+FFFF at position 0"),
    ],
)
def test_decoding_refuses_bytes_that_are_not_an_allowed_string(header: str, message: str) -> None:
    with pytest.raises(MalformedEvent, match="attribute 'subject'") as info:
        decode({**REQUIRED, "ce-subject": header}, b"")
    assert message in info.value.reason


def test_a_percent_encoded_subject_from_http_decodes() -> None:
    event = decode({**REQUIRED, "ce-subject": "Z%C3%BCrich", "ce-city": "K%C3%B8benhavn"}, b"")
    assert (event.subject, event.extensions) == ("Z\u00fcrich", {"city": "K\u00f8benhavn"})
    headers, _ = encode(event)
    assert (headers["ce-subject"], headers["ce-city"]) == ("Z%C3%BCrich", "K%C3%B8benhavn")


_HEADER_NAMES = st.one_of(
    st.sampled_from(["ce-id", "ce-source", "ce-type", "ce-subject", "ce-x1", "content-type"]),
    st.sampled_from(["ce-datacontenttype", "ce-time"]),
)


@given(
    values=st.dictionaries(
        _HEADER_NAMES, st.text(max_size=12) | st.from_regex(r"(%[0-9a-fA-F]{2})+")
    ),
    body=st.binary(max_size=16),
)
def test_any_header_value_decodes_or_is_malformed_and_what_decodes_re_encodes(
    values: dict[str, str], body: bytes
) -> None:
    # Whatever a foreign client puts in a header (raw Unicode, stray or broken escapes, control
    # characters): a MalformedEvent that says why, never another exception.
    try:
        event = decode({**REQUIRED, **values}, body)
    except MalformedEvent:
        return
    headers, data = encode(event)
    assert all(value.isascii() and value.isprintable() for value in headers.values())
    assert decode(headers, data) == event


# ---- canonical forms ------------------------------------------------------------------------


def test_structured_extension_values_take_their_canonical_string_forms() -> None:
    document = {
        "specversion": "1.0",
        "id": "e1",
        "source": "tests",
        "type": "t.x",
        "time": "2024-05-06T07:08:09.5+02:00",  # a timestamp as given
        "urgent": True,
        "quiet": False,
        "count": -3,
        "big": 2**40,
        "link": "https://example.com/a?b=c",  # a URI as given
    }
    event = decode({"content-type": STRUCTURED}, json.dumps(document).encode())
    assert event.time == "2024-05-06T07:08:09.5+02:00"
    assert event.extensions == {
        "urgent": "true",
        "quiet": "false",
        "count": "-3",
        "big": "1099511627776",
        "link": "https://example.com/a?b=c",
    }
    # The same event in binary mode reads the same.
    assert decode(*encode(event)) == event


def test_a_number_with_a_fraction_is_no_extension_value() -> None:
    body = json.dumps({**{k[3:]: v for k, v in REQUIRED.items()}, "ratio": 1.5}).encode()
    with pytest.raises(MalformedEvent, match="extension 'ratio' must be a string, integer"):
        decode(None, body)


# ---- identity -------------------------------------------------------------------------------


def test_an_event_is_identified_by_source_and_id() -> None:
    a = CloudEvent(id="order-1", source="shop/eu", type="t")
    b = CloudEvent(id="order-1", source="shop/us", type="t")
    assert encode(a)[0]["ce-id"] == encode(b)[0]["ce-id"] == "order-1"
    assert encode(a)[0][MSG_ID_HEADER] != encode(b)[0][MSG_ID_HEADER]
    # Deterministic: an outbox re-publish of the same event is still a duplicate.
    assert encode(a)[0][MSG_ID_HEADER] == encode(a)[0][MSG_ID_HEADER] == a.key
    # The documented recipe (docs/protocol.md), so other languages can compute it.
    assert event_key("shop", "order-1") == "9c85d1334e23b0c8b93b5798cde3d5ff"
    # No two pairs collide by concatenation.
    assert event_key("ab", "c") != event_key("a", "bc")


# ---- the official SDK as the reference ------------------------------------------------------


def _sdk_event(attributes: dict[str, Any], data: Any) -> SdkEvent:
    return SdkEvent({k: v for k, v in attributes.items() if v is not None}, data)


@given(
    id=_TEXT,
    source=_TEXT,
    subject=st.none() | _TEXT,
    time=_TIMES,
    extensions=st.dictionaries(_NAMES, _TEXT, max_size=3),
    data=st.none() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
def test_sdk_binary_http_messages_decode_to_the_same_event(
    id: str,
    source: str,
    subject: str | None,
    time: dt.datetime | None,
    extensions: dict[str, str],
    data: Any,
) -> None:
    attributes = {"id": id, "source": source, "type": "t.x", "subject": subject, "time": time}
    message = sdk_http.to_binary_event(_sdk_event({**attributes, **extensions}, data))
    event = decode(message.headers, message.body)
    assert (event.id, event.source, event.subject) == (id, source, subject)
    assert event.extensions == extensions
    if time is not None:
        assert event.time is not None
        assert dt.datetime.fromisoformat(event.time) == time
    assert event.json_data() == data


@given(
    id=_TEXT,
    source=_TEXT,
    subject=st.none() | _TEXT,
    extensions=st.dictionaries(_NAMES, _TEXT, max_size=3),
)
def test_our_binary_messages_decode_with_the_sdk(
    id: str, source: str, subject: str | None, extensions: dict[str, str]
) -> None:
    ours = CloudEvent.create("t.x", source, {"n": 1}, id=id, subject=subject, extensions=extensions)
    headers, body = encode(ours)
    theirs = sdk_http.from_http_event(sdk_http.HTTPMessage(headers=headers, body=body))
    assert (theirs.get_id(), theirs.get_source(), theirs.get_subject()) == (id, source, subject)
    assert {name: theirs.get_extension(name) for name in extensions} == extensions
    assert theirs.get_time() == dt.datetime.fromisoformat(str(ours.time))
    assert theirs.get_data() == {"n": 1}


@given(
    id=_TEXT,
    subject=st.none() | _TEXT,
    extensions=st.dictionaries(_NAMES, _TEXT | st.booleans() | st.integers(-(2**31), 2**31 - 1)),
)
def test_sdk_structured_messages_decode_with_canonical_extension_values(
    id: str, subject: str | None, extensions: dict[str, Any]
) -> None:
    attributes = {"id": id, "source": "sdk", "type": "t.x", "subject": subject}
    message = sdk_http.to_structured_event(_sdk_event({**attributes, **extensions}, {"a": 1}))
    event = decode(message.headers, message.body)
    assert (event.id, event.subject, event.json_data()) == (id, subject, {"a": 1})
    expected = {
        name: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in extensions.items()
    }
    assert event.extensions == expected
    assert decode(*encode(event)) == event
