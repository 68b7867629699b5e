"""Messages handed to us by durable pull consumers: `Delivery` (settled through the one ack
decision, `events.acks.settle`) and `Puller` (fetch what is there, or nothing after a timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from events.acks import Ack, Decision, Nak, Outcome, Term, settle
from events.bus.fetching import PullRequests
from events.errors import BusClosed, BusUnavailable


@dataclass(slots=True)
class Delivery:
    """One message handed to us by a pull consumer."""

    subject: str
    headers: Mapping[str, str]
    data: bytes
    num_delivered: int
    stream_seq: int
    _msg: Msg | None  # None for a message read by sequence (inspection): nothing to settle
    # Messages still waiting in the consumer after this one (0: it was the last one there).
    num_pending: int = 0
    stream: str = ""
    # When the stream stored it (JetStream's timestamp, microseconds since the epoch): the same
    # for every reader and every replay. 0: not known (read by sequence, or built here).
    stored_us: int = 0

    async def apply(self, decision: Decision) -> None:
        if self._msg is None:
            return
        try:
            if isinstance(decision, Ack):
                await self._msg.ack()
            elif isinstance(decision, Nak):
                await self._msg.nak(delay=decision.delay_s)
            elif isinstance(decision, Term):
                await self._msg.term()
        except nats.errors.ConnectionClosedError as exc:
            raise BusClosed(f"could not settle message {self.stream_seq}: {exc}") from exc
        except nats.errors.Error as exc:
            # A lost ack only means a redelivery, which every consumer deduplicates.
            raise BusUnavailable(f"could not settle message {self.stream_seq}: {exc}") from exc

    async def settle(self, outcome: Outcome) -> None:
        await self.apply(settle(outcome, self.num_delivered))

    async def in_progress(self) -> None:
        if self._msg is None:
            return
        with contextlib.suppress(nats.errors.Error):
            await self._msg.in_progress()


class Puller:
    """A durable pull consumer: `fetch` returns what is there, or [] after `timeout`."""

    def __init__(self, sub: JetStreamContext.PullSubscription, name: str = "") -> None:
        self._sub = sub
        self.name = name
        # Our own reading of nats-py's pull subscription (events.bus.fetching: a third of the
        # CPU per message); nats-py's fetch if this nats-py keeps it otherwise.
        self._requests = PullRequests.of(sub)

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        timeout = max(timeout, 0.01)
        try:
            if self._requests is not None:
                msgs = await self._requests.fetch(batch, timeout)
            else:
                msgs = await self._sub.fetch(batch=batch, timeout=timeout)
        except TimeoutError:  # nats.errors.TimeoutError derives from it too
            return []
        except nats.errors.ConnectionClosedError as exc:
            raise BusClosed(f"fetch from {self.name or 'a consumer'} failed: {exc}") from exc
        except nats.errors.Error as exc:
            raise BusUnavailable(f"fetch from {self.name or 'a consumer'} failed: {exc}") from exc
        return [delivery_of(m) for m in msgs]

    async def close(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


class OrderedReader:
    """A stream read in order from a given sequence through an ordered consumer: no durable
    state on the server, no acks — the reader keeps its own position (a projection stores it
    in the same transaction as what it applied). `fetch` has `Puller`'s shape."""

    def __init__(self, sub: JetStreamContext.PushSubscription, name: str) -> None:
        self._sub = sub
        self.name = name

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        try:
            first = await self._sub.next_msg(timeout=max(timeout, 0.01))
        except TimeoutError:
            return []
        except nats.errors.ConnectionClosedError as exc:
            raise BusClosed(f"reading {self.name} failed: {exc}") from exc
        except nats.errors.Error as exc:
            raise BusUnavailable(f"reading {self.name} failed: {exc}") from exc
        out = [_unacked(first)]
        while len(out) < batch and self._sub.pending_msgs > 0:
            try:
                out.append(_unacked(await self._sub.next_msg(timeout=0.01)))
            except (TimeoutError, nats.errors.Error):
                break
        return out

    async def close(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


def _unacked(msg: Msg) -> Delivery:
    delivery = delivery_of(msg)
    delivery._msg = None  # an ordered consumer takes no acks: settling is a no-op
    return delivery


def delivery_of(msg: Msg) -> Delivery:
    meta = msg.metadata
    return Delivery(
        subject=msg.subject,
        headers={k: str(v) for k, v in (msg.headers or {}).items()},
        data=msg.data,
        num_delivered=meta.num_delivered or 1,
        stream_seq=meta.sequence.stream if meta.sequence else 0,
        _msg=msg,
        num_pending=meta.num_pending or 0,
        stream=meta.stream or "",
        stored_us=_microseconds(meta.timestamp),
    )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _microseconds(moment: dt.datetime | None) -> int:
    # Integer arithmetic: every reader of the same message gets the same number.
    return (moment - _EPOCH) // _MICROSECOND if moment is not None else 0


async def keep_alive(deliveries: Sequence[Delivery], interval_s: float) -> None:
    """Tell JetStream every `interval_s` that `deliveries` are still being worked on (resets
    their ack wait) until cancelled: for work that may outlast the consumer's ack wait."""
    while True:
        await asyncio.sleep(interval_s)
        for delivery in deliveries:
            await delivery.in_progress()


class KeptAlive:
    """`keep_alive` for work that usually ends well before the first interval (an engine's
    batch: a fraction of a millisecond against seconds): a timer, started on entering and
    cancelled on leaving, starts the heartbeats only if the work is still going when it fires.
    A task started and cancelled around every batch cost a task, two loop turns and a timer of
    its own, per batch (every event, in a chain)."""

    def __init__(self, deliveries: Sequence[Delivery], interval_s: float) -> None:
        self._deliveries = deliveries
        self._interval_s = interval_s
        self._timer: asyncio.TimerHandle | None = None
        self._beating: asyncio.Task[None] | None = None

    def __enter__(self) -> KeptAlive:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._interval_s, self._start)
        return self

    def __exit__(self, *_: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._beating is not None:
            self._beating.cancel()

    def _start(self) -> None:
        self._timer = None
        self._beating = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        for delivery in self._deliveries:
            await delivery.in_progress()
        await keep_alive(self._deliveries, self._interval_s)


async def settle_quietly(delivery: Delivery, outcome: Outcome) -> None:
    """Settle, ignoring a lost connection: an unsettled message is redelivered, and every
    consumer of ours deduplicates redeliveries."""
    with contextlib.suppress(BusUnavailable):
        await delivery.settle(outcome)
