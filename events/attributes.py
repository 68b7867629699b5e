"""CloudEvent attribute values: which strings are allowed, their canonical string forms, and
how they travel in message headers. Pure: no I/O, no client library.

- CloudEvents strings may hold any Unicode character except control characters (U+0000-U+001F,
  U+007F-U+009F), noncharacters and surrogates. A value holding one is refused, on the way in
  and on the way out, so whatever decodes can be encoded again.
- Header values are printable ASCII. On NATS and on HTTP alike (the CloudEvents NATS binding
  1.0.3, section 3.1.3.2, is the HTTP binding's rule), a value is percent-encoded: every
  character outside U+0021-U+007E, and space, `"` and `%`, as the %XX of its UTF-8 bytes.
  Decoding undoes one double-quoted string (older senders) and one round of percent-decoding,
  and refuses bytes that are not UTF-8 (an overlong `%C0%A0` included). A `%` not followed by
  two hex digits is kept as it is, so a value written before this rule still reads the same.
- Extension values of other types take their canonical string form: `true`/`false`, integers
  in decimal; URIs and timestamps stay as given.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from events.errors import MalformedEvent

# Characters a header value may carry as they are (the binding's printable ASCII less space, `"`
# and `%`): quote() keeps these and encodes everything else.
_AS_IS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
_FORBIDDEN = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}]")
_OWS = " \t"


def _plain(value: str) -> bool:
    """Printable ASCII without space, `"` or `%`: allowed, and a header value as it is. (String
    methods rather than a regex: this is every attribute of every event, on the hot path.)"""
    return (
        value.isascii()
        and value.isprintable()
        and " " not in value
        and '"' not in value
        and "%" not in value
    )


def check_value(name: str, value: str) -> str:
    """`value` if CloudEvents allows it as the value of attribute `name`; else MalformedEvent."""
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise MalformedEvent(
            f"attribute {name!r} holds U+{ord(bad.group()):04X} at position {bad.start()}: "
            "CloudEvents attributes cannot hold control characters, noncharacters or surrogates"
        )
    return value


def check_media_type(value: str) -> str:
    """A media type (datacontenttype) is ASCII (RFC 2046) and travels as a plain header value."""
    if not (value.isascii() and value.isprintable()):
        raise MalformedEvent(
            f"attribute 'datacontenttype' must be a media type in printable ASCII, got {value!r}"
        )
    return value


def to_header(name: str, value: str) -> str:
    """The header value of attribute `name` (checked, then percent-encoded where needed)."""
    if _plain(value):
        return value  # the common case: nothing to check further, nothing to encode
    check_value(name, value)
    return quote(value, safe=_AS_IS)


def from_header(name: str, raw: str) -> str:
    """The attribute value a header carries (the inverse of `to_header`, lenient as the binding
    asks: a double-quoted value, needless encoding and lower-case hex are accepted)."""
    if _plain(raw):
        return raw  # the common case
    value = raw.strip(_OWS)
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    if "%" in value:
        try:
            value = unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEvent(
                f"attribute {name!r}: its percent-encoded bytes are not UTF-8 ({exc.reason} at "
                f"byte {exc.start})"
            ) from None
    return check_value(name, value)


def canonical(name: str, value: Any) -> str:
    """The canonical string form of an extension value given as JSON (structured mode)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return check_value(name, value)
    raise MalformedEvent(f"extension {name!r} must be a string, integer or boolean")
