"""The CloudEvents 1.0 envelope as a frozen value that knows no client library.

The data stays as the encoded bytes it arrived with: decoding it into the model of its type
happens once, where it is used (`data_as`), and a message that is forwarded is never re-encoded.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from events.errors import MalformedEvent
from events.ids import event_key

SPEC_VERSION = "1.0"
JSON = "application/json"

M = TypeVar("M", bound=BaseModel)


def strict_json(raw: bytes | str) -> Any:
    """JSON as RFC 8259 has it. Python reads (and writes) NaN and Infinity, no other parser
    does: a value that would break every reader downstream is a ValueError here."""
    return json.loads(raw, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """A CloudEvent: the required attributes, the optional ones we use, extensions, data bytes."""

    id: str
    source: str
    type: str
    data: bytes = b""
    datacontenttype: str | None = JSON
    subject: str | None = None
    time: str | None = None
    dataschema: str | None = None
    specversion: str = SPEC_VERSION
    extensions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        type: str,
        source: str,
        data: BaseModel | Any,
        *,
        id: str | None = None,
        subject: str | None = None,
        time: str | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> CloudEvent:
        """Build an event with JSON data; `id` defaults to a random UUID, `time` to now."""
        if isinstance(data, BaseModel):
            body = data.model_dump_json().encode()
        else:
            body = json.dumps(data, separators=(",", ":")).encode()
        return cls(
            id=id or uuid.uuid4().hex,
            source=source,
            type=type,
            data=body,
            subject=subject,
            time=time or utc_now_iso(),
            extensions=dict(extensions or {}),
        )

    @property
    def key(self) -> str:
        """The event's identity (`source` and `id` together) as one string: `events.ids.event_key`.
        What deduplicates an event, on the bus and in the orchestrator."""
        return event_key(self.source, self.id)

    def data_as(self, model: builtins.type[M]) -> M:
        """Decode the data into `model`; a mismatch is a MalformedEvent naming the event."""
        try:
            return model.model_validate_json(self.data or b"null")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<data>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise MalformedEvent(
                f"event {self.id!r} of type {self.type!r}: data does not fit {model.__name__}: "
                f"{problems}"
            ) from None

    def json_data(self) -> Any:
        """The data parsed as JSON (for events whose type has no model, e.g. upstream ones)."""
        if not self.data:
            return None
        try:
            return strict_json(self.data)
        except ValueError as exc:
            raise MalformedEvent(f"event {self.id!r}: data is not JSON: {exc}") from None
