"""Parking a message we cannot handle on the dead-letter stream, with the reason — the one home
for the engine, the projection, the router, the notifier and the workers.

The parked copy must always be publishable, whatever the original looked like, or the original
would be redelivered forever (and drag its batch with it):

- only headers that are safe to send again are copied: names that are HTTP tokens, values that
  are printable ASCII, and never a `Nats-*` header (the server acts on those: a copied
  `Nats-Expected-Stream` makes the publish fail, a copied `Nats-Msg-Id` makes it a duplicate);
  what was dropped is listed in `Conveyor-Dlq-Dropped-Headers`;
- the reason is made ASCII and capped;
- the body is cut to what fits under the server's max payload together with the headers (the
  original size in `Conveyor-Dlq-Truncated`): a message near the limit plus our headers would be
  over it, and a payload over the limit makes the server close the connection;
- the copy's `Nats-Msg-Id` is derived from the original's stream and sequence, so a redelivered
  message is parked once.
"""

from __future__ import annotations

import re

import structlog

from events.bus import Bus, Delivery
from events.codec import MSG_ID_HEADER, header_block_size
from events.errors import BusClosed, BusError, BusUnavailable

REASON = "Conveyor-Dlq-Reason"
SUBJECT = "Conveyor-Dlq-Subject"
SOURCE = "Conveyor-Dlq-Source"  # <stream>:<sequence> of the original
ORIGIN = "Conveyor-Dlq-Origin"  # which component parked it
TRUNCATED = "Conveyor-Dlq-Truncated"  # the original body's size, when it was cut
DROPPED = "Conveyor-Dlq-Dropped-Headers"
MAX_REASON_CHARS = 1000
_MAX_LISTED_DROPPED = 20
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{0,4096}")
_MARGIN = 512  # room for what the client adds to a message (the header block's framing)

log = structlog.get_logger("conveyor.dlq")


def _ascii(text: str, limit: int) -> str:
    cleaned = text.encode("ascii", "replace").decode()
    cleaned = "".join(c if " " <= c <= "~" else " " for c in cleaned)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _ours(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("Conveyor-") or k == MSG_ID_HEADER}


def parked_copy(
    delivery: Delivery, origin: str, reason: str, *, max_payload: int
) -> tuple[dict[str, str], bytes]:
    """The headers and body that park `delivery` (pure: see the module docstring)."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in delivery.headers.items():
        safe = (
            _HEADER_NAME.fullmatch(name)
            and not name.lower().startswith("nats-")
            and not name.lower().startswith("conveyor-dlq-")
            and isinstance(value, str)
            and _HEADER_VALUE.fullmatch(value)
        )
        if safe:
            kept[name] = value
        elif not name.lower().startswith("nats-msg-id"):
            dropped.append(_ascii(name, 64))
    headers = {
        **kept,
        REASON: _ascii(reason or "unknown", MAX_REASON_CHARS),
        SUBJECT: _ascii(delivery.subject, 512),
        SOURCE: f"{_ascii(delivery.stream, 64)}:{delivery.stream_seq}",
        ORIGIN: _ascii(origin, 64),
        MSG_ID_HEADER: f"dlq:{origin}:{delivery.stream}:{delivery.stream_seq}",
    }
    if dropped:
        listed = ", ".join(dropped[:_MAX_LISTED_DROPPED])
        more = len(dropped) - _MAX_LISTED_DROPPED
        headers[DROPPED] = listed + (f" and {more} more" if more > 0 else "")
    body = delivery.data
    room = max_payload - header_block_size(headers) - _MARGIN
    if room < 0:  # the headers we kept are themselves too big: keep only ours
        headers = {
            k: v for k, v in headers.items() if k.startswith("Conveyor-") or k == MSG_ID_HEADER
        }
        headers[DROPPED] = "all (too large to keep)"
        room = max_payload - header_block_size(headers) - _MARGIN
    if len(body) > room:
        headers[TRUNCATED] = str(len(body))
        body = body[: max(0, room - len(TRUNCATED) - 16)]
    return headers, body


async def park(bus: Bus, delivery: Delivery, origin: str, reason: str) -> None:
    """Publish the parked copy of `delivery` on `<ns>.dlq.<origin>`; then it can be acked.

    BusUnavailable (try again later) and BusClosed (the process ends) propagate. Any other
    refusal of the copy falls back to a bare record — our headers only, no body — which the
    server cannot refuse: parking never fails in a loop because of what the message holds."""
    subject = bus.topology.dlq_subject(origin)
    headers, body = parked_copy(delivery, origin, reason, max_payload=bus.max_payload)
    try:
        await bus.publish_raw(subject, headers, body)
    except (BusUnavailable, BusClosed):
        raise
    except BusError as exc:
        bare = _ours(headers)
        bare[TRUNCATED] = str(len(delivery.data))
        bare[DROPPED] = _ascii(f"all (the full copy was refused: {exc})", 500)
        await bus.publish_raw(subject, bare, b"")
    log.warning(
        "message parked on the dead-letter stream",
        origin=origin,
        reason=headers[REASON],
        subject=headers[SUBJECT],
        source=headers[SOURCE],
    )
