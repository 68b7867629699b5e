"""Hostile messages for the bus tests, sent the way a foreign client sends them.

nats-py refuses to send a header named `x(y)`; other clients do not, so `raw_publish` speaks
the NATS protocol itself (CONNECT, SUB, HPUB) over a socket and waits for JetStream's ack.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from urllib.parse import urlparse

from events.bus import Bus, Delivery
from events.dlq import DROPPED, ORIGIN, REASON, SOURCE, TRUNCATED

Headers = Sequence[tuple[str, str]]
_INBOX = "_INBOX.hostile"


async def raw_publish(url: str, subject: str, headers: Headers, body: bytes) -> int:
    """Publish `body` with `headers` exactly as given; returns the stream sequence JetStream
    acknowledged (fails if no stream took it)."""
    server = urlparse(url)
    reader, writer = await asyncio.open_connection(server.hostname, server.port)
    try:
        await reader.readline()  # INFO
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True}
        block = b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n"
        writer.write(
            f"CONNECT {json.dumps(connect)}\r\nSUB {_INBOX} 1\r\n".encode()
            + f"HPUB {subject} {_INBOX} {len(block)} {len(block) + len(body)}\r\n".encode()
            + block
            + body
            + b"\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            while True:
                line = await reader.readline()
                if line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")
                elif line.startswith((b"MSG", b"HMSG")):
                    size = int(line.split()[-1])
                    reply = json.loads((await reader.readexactly(size + 2))[:-2])
                    assert "seq" in reply, f"JetStream refused the hostile message: {reply}"
                    return int(reply["seq"])
                elif line.startswith(b"-ERR") or not line:
                    raise AssertionError(f"the server refused the hostile message: {line!r}")
    finally:
        writer.close()


def unparkable_headers(stream: str) -> list[tuple[str, str]]:
    """Headers a copy cannot carry: the server acts on `Nats-*` ones (a copy expecting the
    original's stream fails on the DLQ stream), and nats-py refuses a name like `x(y)`."""
    return [("Nats-Expected-Stream", stream), ("x(y)", "1"), ("ce-note", "kept")]


def near_max_garbage(max_payload: int, headers: Headers) -> bytes:
    """Random bytes that, with `headers`, fill a message to a few bytes under the limit."""
    block = 12 + sum(len(k) + len(v) + 4 for k, v in headers) + 2
    return os.urandom(max_payload - block - 16)


async def parked(bus: Bus, origin: str) -> list[Delivery]:
    """The dead-letter copies `origin` parked, in the order of the originals on their stream
    (a component may park concurrently handled messages in any order)."""
    copies = await bus.stream_messages(bus.topology.dlq_stream)
    ours = [c for c in copies if c.headers.get(ORIGIN) == origin]
    return sorted(ours, key=lambda c: int(c.headers[SOURCE].rsplit(":", 1)[1]))


def check_copy(copy: Delivery, max_payload: int, *, reason: str, dropped: set[str]) -> None:
    """A dead-letter copy says why, lists what it could not keep, and fits the limit."""
    assert reason in copy.headers[REASON], copy.headers
    listed = set(copy.headers.get(DROPPED, "").split(", ")) - {""}
    assert listed == dropped, copy.headers
    size = 12 + sum(len(k) + len(v) + 4 for k, v in copy.headers.items()) + 2 + len(copy.data)
    assert size <= max_payload


def truncated_to(copy: Delivery) -> int | None:
    value = copy.headers.get(TRUNCATED)
    return None if value is None else int(value)


async def consumer_settled(bus: Bus, stream: str, durable: str) -> bool:
    """Every message the consumer holds was handed out and settled: a message that cannot be
    parked is redelivered forever, and keeps this false."""
    return await bus.pending(stream, durable) == 0
