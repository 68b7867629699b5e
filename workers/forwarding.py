"""The upgrade path from per-queue dispatch: forward what is left on a queue's old subject.

Versions before per-task routing dispatched every task of a queue on `<ns>.task.<queue>`, read
through one consumer `queue-<queue>`. A task dispatched there before an upgrade would wait
forever: no worker of this version reads that subject. So each worker, for each queue it serves,
reads the old consumer while it exists (an older worker still uses it) or while the old subject
still holds messages, and moves every message to its task's subject, `<ns>.task.<queue>.<task>`
— whether or not it serves that task: this is routing, not running. The copy keeps the message's
headers and body (the same CloudEvent) with a `Nats-Msg-Id` of its own (`<id>:routed`: the
original id is still inside the stream's duplicate window); the old message is acked only once
the copy is stored, so a crash in between at worst forwards it twice, and the second copy is
dropped as a duplicate.
"""

from __future__ import annotations

import asyncio

import structlog

from events.acks import Outcome
from events.bus import Bus, Delivery, settle_quietly
from events.codec import decode
from events.consuming import Fetcher
from events.dlq import park
from events.errors import BusClosed, BusError, MalformedEvent
from events.ids import is_token
from events.models import TaskDispatched

log = structlog.get_logger("conveyor.worker")


class LegacyForwarder:
    def __init__(self, bus: Bus, queue: str, fetcher: Fetcher) -> None:
        self.bus = bus
        self.queue = queue
        self.fetcher = fetcher
        self.forwarded = 0

    async def run(self, stopping: asyncio.Event, *, burst: bool = False) -> None:
        """Forward until `stopping` is set (or, with `burst`, until nothing is left)."""
        while not stopping.is_set():
            deliveries = await self.fetcher.fetch(64, timeout=2.0)
            if not deliveries and burst:
                return
            for delivery in deliveries:
                await self._forward(delivery)

    async def close(self) -> None:
        await self.fetcher.close()

    async def _forward(self, delivery: Delivery) -> None:
        try:
            dispatched = decode(delivery.headers, delivery.data).data_as(TaskDispatched)
            if not is_token(dispatched.task):
                raise MalformedEvent(
                    f"task name {dispatched.task!r} is not subject-safe: it cannot be routed"
                )
        except MalformedEvent as exc:
            await park_and_settle(self.bus, delivery, exc.reason)
            return
        topology = self.bus.topology
        # The CloudEvent's headers; never a `Nats-*` one, which the server would act on again.
        headers = {k: v for k, v in delivery.headers.items() if not k.lower().startswith("nats-")}
        original = delivery.headers.get("Nats-Msg-Id") or f"seq-{delivery.stream_seq}"
        headers["Nats-Msg-Id"] = f"{original}:routed"
        try:
            await self.bus.publish_raw(
                topology.task_subject(self.queue, dispatched.task), headers, delivery.data
            )
        except BusClosed:
            raise
        except BusError as exc:
            log.warning("could not forward a task; it stays", queue=self.queue, error=str(exc))
            await settle_quietly(delivery, Outcome.TRANSIENT)
            return
        await settle_quietly(delivery, Outcome.DONE)
        self.forwarded += 1
        log.info(
            "forwarded a task dispatched before the upgrade to its own subject",
            queue=self.queue,
            task=dispatched.task,
            run_id=dispatched.run_id,
            node_id=dispatched.node_id,
        )


async def park_and_settle(bus: Bus, delivery: Delivery, reason: str) -> None:
    """A task message that is not a valid dispatch: parked on `<ns>.dlq.worker`, then acked
    (or, if it could not be parked now, handed back for later)."""
    try:
        await park(bus, delivery, "worker", reason)
    except BusClosed:
        raise
    except BusError:
        await settle_quietly(delivery, Outcome.TRANSIENT)
        return
    await settle_quietly(delivery, Outcome.PARKED)
