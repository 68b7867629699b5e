"""`KeptAlive` (what the engine and router hold each batch in): a message held past its
consumer's ack wait inside it is not redelivered, one held as long outside it is — and work that
ends before the first interval leaves nothing running behind it."""

from __future__ import annotations

import asyncio
import time

from events import Bus, CloudEvent
from events.acks import Outcome
from events.bus import Delivery, KeptAlive


async def _two_messages(bus: Bus) -> list[Delivery]:
    subject = bus.topology.task_subject("default", "held")
    for n in range(2):
        await bus.publish(subject, CloudEvent.create("t.held", "tests", {"n": n}))
    puller = await bus.task_puller("default", "held")
    got: list[Delivery] = []
    while len(got) < 2:
        got += await puller.fetch(2 - len(got), timeout=2.0)
    await puller.close()  # a subscription left open holds the connection's drain
    return got


async def test_a_message_held_inside_it_past_the_ack_wait_is_not_redelivered(bus: Bus) -> None:
    ack_wait = bus.topology.task_ack_wait_s  # 2 s in tests
    kept, left = await _two_messages(bus)
    other = await bus.task_puller("default", "held")
    redelivered: list[int] = []

    async def watch() -> None:
        deadline = time.monotonic() + ack_wait * 1.6
        while time.monotonic() < deadline:
            for delivery in await other.fetch(2, timeout=0.5):
                redelivered.append(delivery.stream_seq)
                await delivery.settle(Outcome.DONE)

    with KeptAlive([kept], ack_wait / 4):
        await watch()
    await other.close()
    assert redelivered == [left.stream_seq], "only the message outside KeptAlive came back"
    await kept.settle(Outcome.DONE)


async def test_work_that_ends_before_the_first_interval_leaves_nothing_running(bus: Bus) -> None:
    kept, left = await _two_messages(bus)
    before = len(asyncio.all_tasks())
    with KeptAlive([kept], 0.2):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # past the interval: a timer left behind would have fired by now
    assert len(asyncio.all_tasks()) == before
    for delivery in (kept, left):
        await delivery.settle(Outcome.DONE)
