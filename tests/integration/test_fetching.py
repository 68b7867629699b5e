"""A fetch from a durable pull consumer (`events.bus.fetching`, under every `Puller`), on a real
nats-server: what is there comes at once and in stream order, up to the batch; an empty consumer
answers [] after the timeout and not much later; what is published during the wait comes as soon
as it is stored; a fetch waiting when its connection closes says so; and the queue it reads is left
balanced (a connection drains without waiting out its drain timeout)."""

from __future__ import annotations

import asyncio
import time

import pytest

from events import Bus, CloudEvent
from events.acks import Outcome
from events.bus import Puller
from events.bus.fetching import PullRequests
from events.errors import BusClosed
from events.server import EmbeddedServer


async def _publish(bus: Bus, task: str, count: int) -> None:
    subject = bus.topology.task_subject("default", task)
    for n in range(count):
        await bus.publish(subject, CloudEvent.create("t.fetch", "tests", {"n": n}))


async def test_what_is_there_comes_at_once_in_order_up_to_the_batch(bus: Bus) -> None:
    await _publish(bus, "f1", 5)
    puller = await bus.task_puller("default", "f1")
    began = time.monotonic()
    first = await puller.fetch(3, timeout=5.0)
    rest = await puller.fetch(10, timeout=5.0)
    assert time.monotonic() - began < 2.0, "a fetch waited although messages were there"
    seqs = [d.stream_seq for d in first + rest]
    assert len(first) == 3 and len(rest) == 2
    assert seqs == sorted(seqs)
    assert [d.num_pending for d in first] == [4, 3, 2]
    for delivery in first + rest:
        await delivery.settle(Outcome.DONE)
    await puller.close()


async def test_an_empty_consumer_answers_nothing_after_the_timeout(bus: Bus) -> None:
    puller = await bus.task_puller("default", "f2")
    for batch in (1, 64):
        began = time.monotonic()
        assert await puller.fetch(batch, timeout=0.3) == []
        assert 0.25 < time.monotonic() - began < 3.0
    await puller.close()


async def test_a_message_published_during_the_wait_comes_when_stored(bus: Bus) -> None:
    puller = await bus.task_puller("default", "f3")
    for batch in (1, 256):
        fetching = asyncio.create_task(puller.fetch(batch, timeout=10.0))
        await asyncio.sleep(0.1)
        published = time.monotonic()
        await _publish(bus, "f3", 1)
        [delivery] = await asyncio.wait_for(fetching, 5.0)
        assert time.monotonic() - published < 2.0, "the fetch waited out its timeout"
        await delivery.settle(Outcome.DONE)
    await puller.close()


async def test_a_fetch_waiting_when_its_connection_closes_says_so(
    nats_server: EmbeddedServer, bus: Bus
) -> None:
    own = await Bus.connect(nats_server.url, bus.topology, name="test-closing")
    puller = await own.task_puller("default", "f4")
    fetching = asyncio.create_task(puller.fetch(1, timeout=1.0))
    await asyncio.sleep(0.1)
    await own.close()  # drained: nothing cancels the read, so it ends by its timeout
    with pytest.raises(BusClosed):
        await asyncio.wait_for(fetching, 5.0)


async def test_the_queue_is_left_balanced_so_a_drain_does_not_wait(
    nats_server: EmbeddedServer, bus: Bus
) -> None:
    own = await Bus.connect(nats_server.url, bus.topology, name="test-drain")
    await _publish(own, "f5", 20)
    puller = await own.task_puller("default", "f5")
    got = 0
    while got < 20:
        got += len(await puller.fetch(7, timeout=2.0))
    began = time.monotonic()
    await own.close()  # drains every subscription: joins its queue
    assert time.monotonic() - began < 5.0


def test_a_subscription_it_cannot_read_is_left_to_nats_py() -> None:
    assert PullRequests.of(object()) is None  # type: ignore[arg-type]
    assert Puller(object(), "x")._requests is None  # type: ignore[arg-type]
