"""`Bus.send_many_then` (what the engine publishes its outbox with): `then` is called once,
with None when JetStream acked every message, with a BusError when one was refused or never
acked — never twice, never not at all."""

from __future__ import annotations

import asyncio

from events import Bus
from events.errors import BusError


async def _outcome(bus: Bus, items: list[tuple[str, dict[str, str], bytes]]) -> list[object]:
    calls: list[object] = []
    called = asyncio.Event()

    def then(error: BusError | None) -> None:
        calls.append(error)
        called.set()

    await bus.send_many_then(items, then, timeout=2.0)
    await asyncio.wait_for(called.wait(), 5.0)
    await asyncio.sleep(0.2)  # a second call would come by now
    return calls


async def test_every_message_acked_calls_then_once_with_none(bus: Bus) -> None:
    subject = bus.topology.task_subject("default", "confirmed")
    items = [(subject, {"Nats-Msg-Id": f"c-{i}"}, b"{}") for i in range(50)]
    assert await _outcome(bus, items) == [None]
    stored = await bus.stream_messages(bus.topology.tasks_stream)
    assert len([m for m in stored if m.subject == subject]) == 50


async def test_a_message_no_stream_takes_calls_then_once_with_the_error(bus: Bus) -> None:
    good = bus.topology.task_subject("default", "confirmed")
    items = [
        (good, {"Nats-Msg-Id": "d-1"}, b"{}"),
        ("nowhere.at.all", {"Nats-Msg-Id": "d-2"}, b"{}"),
    ]
    [error] = await _outcome(bus, items)
    assert isinstance(error, BusError)
