"""The parked copy of a message we cannot handle is always publishable (pure part of
events.dlq): only safe headers, a capped ASCII reason, a body cut to fit the server's limit, and
a dedupe id from the original's position so a redelivery is parked once."""

from __future__ import annotations

from events.bus import Delivery
from events.codec import MSG_ID_HEADER, header_block_size
from events.dlq import DROPPED, MAX_REASON_CHARS, REASON, SOURCE, TRUNCATED, parked_copy

MAX_PAYLOAD = 1024 * 1024


def _delivery(headers: dict[str, str], body: bytes = b"{}", seq: int = 7) -> Delivery:
    return Delivery("ns.evt.0.task.completed.r1", headers, body, 1, seq, None, stream="NS_EVENTS")


def test_server_acted_headers_and_invalid_names_are_dropped_and_listed() -> None:
    headers, _ = parked_copy(
        _delivery(
            {
                "Nats-Expected-Stream": "NS_EVENTS",
                "Nats-Msg-Id": "abc",
                "x(y)": "1",
                "ce-id": "e1",
                "ce-source": "me",
                "bad-value": "caf\u00e9",
            }
        ),
        "orchestrator",
        "malformed",
        max_payload=MAX_PAYLOAD,
    )
    assert "Nats-Expected-Stream" not in headers
    assert "x(y)" not in headers and "bad-value" not in headers
    assert headers["ce-id"] == "e1" and headers["ce-source"] == "me"
    assert headers[MSG_ID_HEADER] == "dlq:orchestrator:NS_EVENTS:7"
    assert headers[SOURCE] == "NS_EVENTS:7"
    assert set(headers[DROPPED].split(", ")) == {"Nats-Expected-Stream", "x(y)", "bad-value"}


def test_the_reason_is_ascii_and_capped() -> None:
    headers, _ = parked_copy(
        _delivery({}), "worker", "caf\u00e9\r\n" + "x" * 5000, max_payload=MAX_PAYLOAD
    )
    reason = headers[REASON]
    assert len(reason) == MAX_REASON_CHARS and reason.isascii() and "\n" not in reason
    assert reason.startswith("caf? ")


def test_a_body_near_the_limit_is_cut_so_the_copy_fits() -> None:
    body = b"x" * (MAX_PAYLOAD - 100)
    headers, parked = parked_copy(
        _delivery({"ce-id": "e"}, body), "router", "garbage", max_payload=MAX_PAYLOAD
    )
    assert header_block_size(headers) + len(parked) <= MAX_PAYLOAD
    assert headers[TRUNCATED] == str(len(body))
    assert body.startswith(parked) and len(parked) > MAX_PAYLOAD // 2


def test_headers_too_big_to_keep_leave_only_ours() -> None:
    huge = {f"h{i}": "v" * 4000 for i in range(300)}
    headers, parked = parked_copy(_delivery(huge, b"body"), "worker", "r", max_payload=MAX_PAYLOAD)
    assert header_block_size(headers) + len(parked) <= MAX_PAYLOAD
    assert not any(name.startswith("h") for name in headers)
    assert headers[DROPPED] == "all (too large to keep)"


def test_the_same_delivery_gives_the_same_copy() -> None:
    delivery = _delivery({"ce-id": "e"})
    first = parked_copy(delivery, "worker", "r", max_payload=MAX_PAYLOAD)
    assert parked_copy(delivery, "worker", "r", max_payload=MAX_PAYLOAD) == first
