"""What a single message can do to a connection, on a real nats-server: nothing. A subject the
server would answer by closing the connection (whitespace, a wildcard, longer than a protocol
line) is refused before sending; an event type of any length is ingested; any Unicode attribute
travels percent-encoded and reads back the same."""

from __future__ import annotations

import pytest

from events import Bus, CloudEvent
from events.codec import decode
from events.errors import BadSubject, BusError


@pytest.mark.parametrize(
    "subject",
    ["a b", "a\tb", "a\r\nPUB x 1", "a..b", ".a", "a.", "", "a.*", "a.>", "x" * 5000, "a.\ud800"],
)
async def test_a_subject_the_server_would_refuse_is_refused_before_sending(
    bus: Bus, subject: str
) -> None:
    with pytest.raises(BadSubject):
        await bus.publish_raw(subject, {}, b"x")
    with pytest.raises(BadSubject):
        await bus.request(subject, b"x", timeout=1)
    await bus.publish_core(subject, b"x")  # fire and forget: dropped
    assert not bus.is_closed
    event = CloudEvent.create("t.ok", "tests", {})
    assert await bus.publish(bus.topology.ingest_subject(event.type), event) is False


async def test_an_event_type_of_any_length_is_ingested(bus: Bus) -> None:
    event = CloudEvent.create("com.example." + "x" * 5000, "tests", {"n": 1})
    subject = bus.topology.ingest_subject(event.type)
    assert len(subject) < 300
    assert await bus.publish(subject, event) is False  # on main: the server closed the connection
    assert not bus.is_closed
    [stored] = await bus.stream_messages(bus.topology.ingest_stream)
    assert decode(stored.headers, stored.data) == event


async def test_unicode_attributes_travel_percent_encoded(bus: Bus) -> None:
    event = CloudEvent.create(
        "com.example.city",
        "sensors/z\u00fcrich",
        {"t": 21},
        id="\u6e29\u5ea6-1",
        subject="Z\u00fcrich \U0001f600 100%",
        extensions={"note": 'say "gr\u00fc\u00dfe"'},
    )
    await bus.publish(bus.topology.ingest_subject(event.type), event)
    [stored] = await bus.stream_messages(bus.topology.ingest_stream)
    assert stored.headers["ce-subject"] == "Z%C3%BCrich%20%F0%9F%98%80%20100%25"
    assert decode(stored.headers, stored.data) == event


async def test_a_pipelined_publish_waits_for_room_only_when_its_window_is_full(bus: Bus) -> None:
    """Room among the unacked publishes is taken at once (no timer); with none, the publish
    waits at most its timeout and says so, never forever."""
    event = CloudEvent.create("t.window", "tests", {})
    subject = bus.topology.ingest_subject(event.type)
    acked = await bus.publish_pipelined(subject, event)
    assert await acked() is False
    window = bus.js._publish_async_pending_semaphore  # nats-py's window of unacked publishes
    taken = 0
    while not window.locked():
        await window.acquire()
        taken += 1
    try:
        other = CloudEvent.create("t.window", "tests", {"n": 2})
        with pytest.raises(BusError):
            await bus.publish_pipelined(subject, other, timeout=0.2)
    finally:
        for _ in range(taken):
            window.release()
    assert await (await bus.publish_pipelined(subject, other))() is False
