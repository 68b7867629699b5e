"""The CloudEvent envelope and its NATS codec: binary mode round trips, structured mode decodes,
malformed input is a MalformedEvent that says what is wrong; conformance with the official SDK."""

import base64
import datetime as dt
import json
import re
from typing import Any

import pytest
from cloudevents.core.bindings import http
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from events.codec import MSG_ID_HEADER, STRUCTURED, decode, encode
from events.envelope import CloudEvent, utc_now_iso
from events.errors import MalformedEvent
from events.ids import event_key

FULL = CloudEvent(
    id="evt-1",
    source="conveyor/orchestrator",
    type="io.conveyor.task.completed",
    data=b'{"ok":true}',
    datacontenttype="application/json",
    subject="run/abc",
    time="2024-05-06T07:08:09.123456Z",
    dataschema="https://example.com/schema.json",
    extensions={
        "runid": "abc",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    },
)

REQUIRED = {"specversion": "1.0", "id": "e1", "source": "tests", "type": "t.happened"}


def binary(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**{f"ce-{k}": v for k, v in REQUIRED.items()}, **(extra or {})}


def structured(**fields: Any) -> bytes:
    return json.dumps({**REQUIRED, **fields}).encode()


def rejected(headers: dict[str, Any] | None, body: bytes) -> str:
    with pytest.raises(MalformedEvent) as info:
        decode(headers, body)
    assert info.value.reason == str(info.value)
    return str(info.value)


# ---- binary mode ----------------------------------------------------------------------------


def test_encode_puts_attributes_in_headers_and_data_in_the_body():
    headers, body = encode(FULL)
    assert headers == {
        MSG_ID_HEADER: event_key("conveyor/orchestrator", "evt-1"),
        "ce-specversion": "1.0",
        "ce-id": "evt-1",
        "ce-source": "conveyor/orchestrator",
        "ce-type": "io.conveyor.task.completed",
        "ce-time": "2024-05-06T07:08:09.123456Z",
        "ce-subject": "run/abc",
        "ce-dataschema": "https://example.com/schema.json",
        "content-type": "application/json",
        "ce-runid": "abc",
        "ce-traceparent": FULL.extensions["traceparent"],
    }
    assert body == b'{"ok":true}'


def test_round_trip_preserves_every_attribute():
    assert decode(*encode(FULL)) == FULL


def test_round_trip_of_a_minimal_event_without_content_type():
    event = CloudEvent(id="1", source="s", type="t", data=b"\x00\xff", datacontenttype=None)
    headers, body = encode(event)
    assert "content-type" not in headers and "ce-time" not in headers
    assert decode(headers, body) == event


def test_header_names_are_case_insensitive():
    headers = {"CE-ID": "e1", "Ce-Source": "s", "CE-TYPE": "t", "CE-SPECVERSION": "1.0"}
    headers |= {"Content-Type": "text/plain", "CE-RUNID": "r"}
    event = decode(headers, b"hi")
    assert (event.id, event.datacontenttype, event.extensions) == (
        "e1",
        "text/plain",
        {"runid": "r"},
    )


def test_non_ce_headers_are_not_extensions():
    event = decode(binary({"Nats-Msg-Id": "e1", "x-trace": "1"}), b"")
    assert event.extensions == {}


_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def _allowed(text: str) -> bool:
    """No noncharacter (the strategies already leave out controls and surrogates)."""
    return not any(0xFDD0 <= ord(c) <= 0xFDEF or ord(c) & 0xFFFE == 0xFFFE for c in text)


# Any text CloudEvents allows in an attribute: every character but controls, surrogates and
# noncharacters (spaces, quotes, `%` and the astral planes included).
_UNICODE = st.characters(exclude_categories=("Cc", "Cs"))
_TEXT = st.text(_UNICODE, max_size=40).filter(_allowed)
_NON_EMPTY = st.text(_UNICODE, min_size=1, max_size=40).filter(_allowed)
_RESERVED = {"id", "source", "type", "specversion", "time", "subject", "dataschema", "data"}
_EXTENSION_NAMES = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(
    lambda n: n not in _RESERVED and n != "datacontenttype"
)


@given(
    id=_NON_EMPTY,
    source=_NON_EMPTY,
    type=_NON_EMPTY,
    subject=st.none() | _TEXT,
    time=st.none() | _NON_EMPTY,
    dataschema=st.none() | _NON_EMPTY,
    datacontenttype=st.sampled_from([None, "application/json", "text/plain; charset=utf-8"]),
    extensions=st.dictionaries(_EXTENSION_NAMES, _TEXT, max_size=5),
    data=st.binary(max_size=256),
)
def test_round_trip_property(**attributes: Any):
    event = CloudEvent(**attributes)
    headers, body = encode(event)
    assert headers[MSG_ID_HEADER] == event_key(event.source, event.id)
    assert all(value.isascii() and value.isprintable() for value in headers.values())
    assert decode(headers, body) == event


# ---- structured mode ------------------------------------------------------------------------


def test_structured_with_json_data():
    body = structured(subject="s1", runid="r", data={"a": [1, 2]}, time="2024-01-01T00:00:00Z")
    event = decode({"content-type": STRUCTURED}, body)
    assert (event.id, event.source, event.type, event.subject) == (
        "e1",
        "tests",
        "t.happened",
        "s1",
    )
    assert event.time == "2024-01-01T00:00:00Z"
    assert event.datacontenttype == "application/json"
    assert json.loads(event.data) == {"a": [1, 2]}
    assert event.extensions == {"runid": "r"}


def test_structured_with_data_base64():
    raw = bytes(range(256))
    body = structured(data_base64=base64.b64encode(raw).decode(), datacontenttype="image/png")
    event = decode({"content-type": STRUCTURED + "; charset=utf-8"}, body)
    assert event.data == raw
    assert event.datacontenttype == "image/png"


def test_structured_text_data_is_the_string_itself():
    event = decode(
        {"content-type": STRUCTURED}, structured(data="hi", datacontenttype="text/plain")
    )
    assert event.data == b"hi"
    json_string = decode(None, structured(data="hi", datacontenttype="application/json"))
    assert json_string.data == b'"hi"'


def test_structured_without_data():
    event = decode({"content-type": STRUCTURED}, structured())
    assert (event.data, event.datacontenttype) == (b"", None)


def test_structured_is_recognised_without_a_content_type():
    assert decode(None, structured(data=1)).data == b"1"
    assert decode({"other": "x"}, structured()).id == "e1"


def test_structured_extension_values_become_strings_and_nulls_are_absent():
    event = decode(None, structured(count=3, flag=True, off=False, gone=None, label="x"))
    assert event.extensions == {"count": "3", "flag": "true", "off": "false", "label": "x"}


# ---- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["id", "source", "type"])
def test_missing_required_attribute_binary(missing):
    headers = binary()
    del headers[f"ce-{missing}"]
    assert rejected(headers, b"") == f"required attribute {missing!r} is missing or empty"


@pytest.mark.parametrize("missing", ["id", "source", "type", "specversion"])
def test_missing_required_attribute_structured(missing):
    document = dict(REQUIRED)
    del document[missing]
    message = rejected({"content-type": STRUCTURED}, json.dumps(document).encode())
    assert message == f"required attribute {missing!r} is missing or empty"


def test_empty_required_attribute():
    assert rejected(binary({"ce-id": ""}), b"") == "required attribute 'id' is missing or empty"


def test_wrong_specversion():
    assert rejected(binary({"ce-specversion": "0.3"}), b"") == (
        "specversion '0.3' is not supported (expected '1.0')"
    )
    assert "specversion '2.0' is not supported" in rejected(None, structured(specversion="2.0"))


@pytest.mark.parametrize("name", ["run_id", "run-id", "a" * 21, "", "runid\n"])
def test_bad_extension_name_binary(name):
    message = rejected(binary({f"ce-{name}": "x"}), b"")
    assert message == f"extension name {name!r} must be 1-20 lowercase letters or digits"


def test_bad_extension_name_structured():
    assert "extension name 'runId' must be 1-20 lowercase" in rejected(None, structured(runId="r"))


def test_structured_body_that_is_not_json():
    assert rejected({"content-type": STRUCTURED}, b"{nope").startswith(
        "structured CloudEvent body is not JSON: "
    )


def test_structured_body_that_is_not_an_object():
    message = rejected({"content-type": STRUCTURED}, b"[1, 2]")
    assert message == "structured CloudEvent body must be a JSON object"


def test_structured_bad_base64():
    message = rejected(None, structured(data_base64="not base64!"))
    assert message.startswith("data_base64 is not valid base64: ")
    assert rejected(None, structured(data_base64=5)).startswith("data_base64 is not valid base64")


def test_structured_attribute_of_the_wrong_type():
    assert rejected(None, structured(subject=5)) == "attribute 'subject' must be a string, got int"
    assert rejected(None, structured(datacontenttype=["a"])) == (
        "attribute 'datacontenttype' must be a string, got list"
    )
    assert rejected(None, structured(score=0.5)) == (
        "extension 'score' must be a string, integer or boolean"
    )
    assert rejected(None, structured(tags=["a"])) == (
        "extension 'tags' must be a string, integer or boolean"
    )


@pytest.mark.parametrize(
    ("headers", "body"),
    [(None, b""), ({}, b"hello"), ({"content-type": "application/json"}, b'{"a": 1}')],
)
def test_no_cloud_event_at_all(headers, body):
    assert rejected(headers, body).startswith("not a CloudEvent: no ce-specversion header")


@pytest.mark.parametrize(
    ("change", "attribute", "char"),
    [
        ({"subject": "tab\there"}, "subject", "U+0009"),
        ({"source": "line\nbreak"}, "source", "U+000A"),
        ({"id": "a\r\nce-type: forged"}, "id", "U+000D"),
        ({"extensions": {"runid": "\x85"}}, "runid", "U+0085"),
        ({"extensions": {"runid": "\ud800"}}, "runid", "U+D800"),
        ({"type": "t\ufffe"}, "type", "U+FFFE"),
    ],
)
def test_encode_refuses_what_cloudevents_forbids(change, attribute, char):
    event = CloudEvent(**{"id": "e1", "source": "s", "type": "t", **change})
    expected = re.escape(f"attribute '{attribute}' holds {char} at position")
    with pytest.raises(MalformedEvent, match=expected):
        encode(event)


@pytest.mark.parametrize("media_type", ["text/plain\n", "text/pl\u00e4in"])
def test_encode_refuses_a_media_type_that_is_not_printable_ascii(media_type):
    event = CloudEvent(id="e1", source="s", type="t", datacontenttype=media_type)
    with pytest.raises(MalformedEvent, match=r"'datacontenttype' must be a media type"):
        encode(event)


@pytest.mark.parametrize("name", ["Run", "run_id", "a" * 21, "runid\n"])
def test_encode_refuses_bad_extension_names(name):
    event = CloudEvent(id="e1", source="s", type="t", extensions={name: "x"})
    message = re.escape(f"extension name {name!r} must be 1-20 lowercase letters or digits")
    with pytest.raises(MalformedEvent, match=message):
        encode(event)


@pytest.mark.parametrize("name", ["subject", "time", "id", "datacontenttype", "data"])
def test_extensions_cannot_take_a_core_attribute_name(name):
    # Else encoding would overwrite the core attribute's header, or give a header that
    # decodes as something else.
    event = CloudEvent(id="e1", source="s", type="t", extensions={name: "x"})
    with pytest.raises(MalformedEvent, match=rf"extension name '{name}' is reserved"):
        encode(event)


@pytest.mark.parametrize("header", ["ce-data", "ce-data_base64"])
def test_decode_refuses_extensions_named_like_core_attributes(header):
    assert header[3:] in rejected(binary({header: "x"}), b"")


def test_ce_datacontenttype_is_the_data_content_type():
    # The NATS binding maps datacontenttype to `ce-datacontenttype` (HTTP: Content-Type).
    event = decode(binary({"ce-datacontenttype": "text/plain;%20charset=utf-8"}), b"hi")
    assert (event.datacontenttype, event.extensions) == ("text/plain; charset=utf-8", {})


def test_structured_body_nested_too_deeply():
    body = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert rejected({"content-type": STRUCTURED}, body).startswith(
        "structured CloudEvent body is not JSON: maximum recursion depth exceeded"
    )


_HEADER_NAMES = st.one_of(
    st.sampled_from(["ce-id", "ce-source", "ce-type", "ce-specversion", "content-type"]),
    st.from_regex(r"[Cc][Ee]-[A-Za-z0-9_.-]{0,22}", fullmatch=True),
    st.text(max_size=10),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(headers=st.dictionaries(_HEADER_NAMES, _PRINTABLE, max_size=8), body=st.binary(max_size=64))
def test_any_binary_message_decodes_or_is_malformed_and_what_decodes_re_encodes(headers, body):
    headers.setdefault("ce-specversion", "1.0")
    try:
        event = decode(headers, body)
    except MalformedEvent:
        return
    assert decode(*encode(event)) == event


@given(
    document=st.dictionaries(
        st.sampled_from(
            [*REQUIRED, "subject", "data", "data_base64", "datacontenttype", "x1", "Bad"]
        ),
        _JSON,
    )
)
def test_any_structured_document_decodes_or_is_malformed(document):
    try:
        event = decode({"content-type": STRUCTURED}, json.dumps({**REQUIRED, **document}).encode())
    except MalformedEvent:
        return
    headers, body = encode(event)  # whatever decodes can go binary: values are percent-encoded
    assert decode(headers, body) == event


def test_structured_event_with_non_ascii_attributes_goes_binary_percent_encoded():
    event = decode(None, structured(subject="caf\u00e9 au lait", tag="100%"))
    headers, _ = encode(event)
    assert (headers["ce-subject"], headers["ce-tag"]) == ("caf%C3%A9%20au%20lait", "100%25")
    assert decode(*encode(event)) == event


# ---- the envelope ---------------------------------------------------------------------------


class Payload(BaseModel):
    n: int
    tags: list[str] = []


def test_create_defaults_id_and_time_and_serialises_json():
    event = CloudEvent.create("t.x", "tests", Payload(n=1), subject="s", extensions={"runid": "r"})
    assert len(event.id) == 32 and event.id != CloudEvent.create("t.x", "tests", {}).id
    assert event.time is not None and event.time.endswith("Z")
    assert dt.datetime.fromisoformat(event.time).tzinfo is not None
    assert event.data == b'{"n":1,"tags":[]}'
    assert (event.datacontenttype, event.subject, event.extensions) == (
        "application/json",
        "s",
        {"runid": "r"},
    )
    plain = CloudEvent.create("t.x", "tests", {"a": [1]}, id="fixed", time="2024-01-01T00:00:00Z")
    assert (plain.id, plain.time, plain.data) == ("fixed", "2024-01-01T00:00:00Z", b'{"a":[1]}')


def test_data_as_decodes_into_the_model():
    event = CloudEvent.create("t.x", "tests", {"n": 3, "tags": ["a"]})
    assert event.data_as(Payload) == Payload(n=3, tags=["a"])


def test_data_as_names_the_event_and_the_problem():
    event = CloudEvent.create("t.x", "tests", {"tags": "nope"}, id="e9")
    with pytest.raises(MalformedEvent) as info:
        event.data_as(Payload)
    message = str(info.value)
    assert message.startswith("event 'e9' of type 't.x': data does not fit Payload: ")
    assert "n: Field required" in message and "tags: Input should be a valid array" in message
    with pytest.raises(MalformedEvent, match=r"<data>: Input should be"):
        CloudEvent(id="e", source="s", type="t").data_as(Payload)


def test_json_data():
    assert CloudEvent(id="e", source="s", type="t", data=b'{"a":1}').json_data() == {"a": 1}
    assert CloudEvent(id="e", source="s", type="t").json_data() is None
    with pytest.raises(MalformedEvent, match=r"event 'e': data is not JSON"):
        CloudEvent(id="e", source="s", type="t", data=b"{").json_data()


def test_utc_now_iso_is_utc_with_microseconds():
    stamp = utc_now_iso()
    parsed = dt.datetime.fromisoformat(stamp)
    assert stamp.endswith("Z") and parsed.utcoffset() == dt.timedelta(0)
    assert len(stamp) == len("2024-01-01T00:00:00.000000Z")


# ---- conformance with the official SDK (cloudevents 2.x, cloudevents.core) --------------------

SDK_ATTRIBUTES = {
    "id": "sdk-1",
    "source": "https://example.com/sdk",
    "type": "com.example.sdk.happened",
    "subject": "thing-7",
    "time": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
    "datacontenttype": "application/json",
    "runid": "r42",
}


def test_sdk_binary_http_message_decodes_with_our_codec():
    message = http.to_binary_event(SdkEvent(dict(SDK_ATTRIBUTES), {"answer": 42}))
    ours = decode(message.headers, message.body)
    assert (ours.id, ours.source, ours.type, ours.subject, ours.specversion) == (
        "sdk-1",
        "https://example.com/sdk",
        "com.example.sdk.happened",
        "thing-7",
        "1.0",
    )
    assert ours.time is not None
    assert dt.datetime.fromisoformat(ours.time) == SDK_ATTRIBUTES["time"]
    assert ours.datacontenttype == "application/json"
    assert ours.extensions == {"runid": "r42"}
    assert ours.json_data() == {"answer": 42}


def test_sdk_structured_http_message_decodes_with_our_codec():
    text = SdkEvent({**SDK_ATTRIBUTES, "datacontenttype": "text/plain"}, "hello")
    message = http.to_structured_event(text)
    ours = decode(message.headers, message.body)
    assert (ours.id, ours.subject, ours.extensions) == ("sdk-1", "thing-7", {"runid": "r42"})
    assert (ours.data, ours.datacontenttype) == (b"hello", "text/plain")
    raw = http.to_structured_event(SdkEvent({**SDK_ATTRIBUTES, "datacontenttype": "x/y"}, b"\x00"))
    assert decode(raw.headers, raw.body).data == b"\x00"


def test_our_binary_message_decodes_with_the_sdk():
    headers, body = encode(FULL)
    del headers[MSG_ID_HEADER]  # a NATS header, not part of the CloudEvent
    sdk = http.from_http_event(http.HTTPMessage(headers=headers, body=body))
    attributes = sdk.get_attributes()
    assert attributes["id"] == FULL.id and attributes["source"] == FULL.source
    assert (attributes["type"], attributes["subject"]) == (FULL.type, FULL.subject)
    assert attributes["dataschema"] == FULL.dataschema
    assert attributes["time"] == dt.datetime.fromisoformat(str(FULL.time))
    assert sdk.get_extension("runid") == "abc"
    assert sdk.get_datacontenttype() == "application/json"
    assert sdk.get_data() == {"ok": True}
