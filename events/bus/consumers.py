"""The durable pull consumers each component reads through, and short-lived readers of a
stream (log pages, replays, live follows)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from events.bus.connection import Connection
from events.bus.pulling import Delivery, OrderedReader, Puller, delivery_of
from events.errors import BusError, BusUnavailable

# Short: what a killed orchestrator (its engine or its trigger router) had fetched is
# redelivered to its replacement within seconds (recovery). Both heartbeat a batch that takes
# longer. (A router's 30 s held a killed router's last fetch back for 30 s: a debounce or batch
# window would close without those events, which then opened a window of their own.)
ORCHESTRATOR_ACK_WAIT_S = 1.5


class Consumers(Connection):
    async def orchestrator_puller(self, partition: int) -> Puller:
        topo = self.topology
        return await self._puller(
            topo.events_stream,
            topo.orchestrator_consumer(partition),
            topo.orchestrator_filters(partition),
            ack_wait=ORCHESTRATOR_ACK_WAIT_S,
            max_ack_pending=20_000,
        )

    async def router_puller(self, partition: int, source: str) -> Puller:
        """`source` "ingest": every CloudEvent published on the ingest subjects; "outcomes": the
        partition's run.succeeded/failed/cancelled events."""
        topo = self.topology
        stream, filters = (
            (topo.ingest_stream, [f"{topo.namespace}.ingest.>"])
            if source == "ingest"
            else (topo.events_stream, topo.outcome_filters(partition))
        )
        return await self._puller(
            stream,
            topo.router_consumer(partition, source),
            filters,
            ack_wait=ORCHESTRATOR_ACK_WAIT_S,
            max_ack_pending=10_000,
        )

    async def notifier_puller(self, partition: int) -> Puller:
        """The partition's run outcomes, for outbound webhooks (own durable consumer)."""
        topo = self.topology
        return await self._puller(
            topo.events_stream,
            topo.notifier_consumer(partition),
            topo.outcome_filters(partition),
            ack_wait=60.0,
            max_ack_pending=1_000,
        )

    async def task_puller(self, queue: str, task: str, max_ack_pending: int = 1_000) -> Puller:
        """The consumer of one task on one queue, shared by every worker that serves it."""
        topo = self.topology
        return await self._puller(
            topo.tasks_stream,
            topo.task_consumer(queue, task),
            [topo.task_subject(queue, task)],
            ack_wait=topo.task_ack_wait_s,
            max_ack_pending=max_ack_pending,
        )

    async def ensure_task_consumer(self, queue: str, task: str) -> bool:
        """Create the consumer of a task if it does not exist yet (True when created), with the
        config `task_puller` gives it — never changing one a worker already set up. Registering
        a workflow does this for its tasks, so a task's backlog can be measured (KEDA scales a
        pool from zero on it) before any worker that serves it has ever run."""
        durable = self.topology.task_consumer(queue, task)
        return await self.through_elections(
            f"consumer {durable}", lambda: self._ensure_task_consumer(queue, task, durable)
        )

    async def _ensure_task_consumer(self, queue: str, task: str, durable: str) -> bool:
        topo = self.topology
        try:
            await self.js.consumer_info(topo.tasks_stream, durable)
            return False
        except nats.js.errors.NotFoundError:
            pass
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot look up consumer {durable}", exc) from exc
        config = self._pull_config(
            durable,
            [topo.task_subject(queue, task)],
            ack_wait=topo.task_ack_wait_s,
            max_ack_pending=1_000,
        )
        try:
            await self.js.add_consumer(topo.tasks_stream, config)
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot create consumer {durable}", exc) from exc
        return True

    async def event_reader(self, start_seq: int) -> OrderedReader:
        """Every event of every partition from stream sequence `start_seq` on, in order, with no
        durable consumer: what a projection reads (each API replica its own, complete copy)."""
        topo = self.topology

        async def subscribe() -> OrderedReader:
            try:
                sub = await self.js.subscribe(
                    f"{topo.namespace}.evt.>",
                    stream=topo.events_stream,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    config=api.ConsumerConfig(opt_start_seq=max(1, start_seq)),
                )
            except nats.errors.Error as exc:
                raise self._closed_error(f"cannot read {topo.events_stream}", exc) from exc
            return OrderedReader(sub, f"{topo.events_stream} from {start_seq}")

        return await self.through_elections(f"a reader of {topo.events_stream}", subscribe)

    async def legacy_queue_puller(self, queue: str) -> Puller | None:
        """The whole-queue consumer of versions that dispatched on `<ns>.task.<queue>`, when it
        still exists or that subject still holds messages — so that what was dispatched before
        an upgrade can be forwarded to its task's subject. None once nothing is left of it."""
        topo = self.topology
        durable, subject = topo.queue_consumer(queue), topo.legacy_task_subject(queue)
        if not await self.through_elections(
            f"consumer {durable}", lambda: self._legacy_queue_left(durable, subject)
        ):
            return None
        # The config the versions before used, so that binding it never conflicts with theirs.
        return await self._puller(
            topo.tasks_stream,
            durable,
            [subject],
            ack_wait=topo.task_ack_wait_s,
            max_ack_pending=1_000,
        )

    async def _legacy_queue_left(self, durable: str, subject: str) -> bool:
        topo = self.topology
        try:
            try:
                await self.js.consumer_info(topo.tasks_stream, durable)
            except nats.js.errors.NotFoundError:
                info = await self.js.stream_info(topo.tasks_stream, subjects_filter=subject)
                return bool((info.state.subjects or {}).get(subject))
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot look up consumer {durable}", exc) from exc
        return True

    async def last_per_subject(
        self, stream: str, subject: str, limit: int = 10_000
    ) -> list[Delivery]:
        """The last message of every subject matching `subject` in `stream`, in one batched
        direct get (the stream must allow direct gets): heartbeats, read without a consumer."""
        inbox = self.nc.new_inbox()
        received: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            received.put_nowait(msg)

        request = json.dumps({"multi_last": [subject], "batch": limit}).encode()
        try:
            sub = await self.nc.subscribe(inbox, cb=on_message)
            await self.nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot read {subject} from {stream}", exc) from exc
        out: list[Delivery] = []
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(received.get(), timeout=5.0)
                except TimeoutError:
                    raise BusUnavailable(f"no answer reading {subject} from {stream}") from None
                headers = dict(msg.headers or {})
                status = headers.get("Status")
                if status is not None:  # 204: end of the batch; 404: nothing matches
                    if status in ("204", "404"):
                        return out
                    raise BusUnavailable(f"cannot read {subject} from {stream}: status {status}")
                out.append(
                    Delivery(
                        headers.get("Nats-Subject", ""),
                        {k: str(v) for k, v in headers.items()},
                        msg.data,
                        1,
                        int(headers.get("Nats-Sequence", 0)),
                        None,
                        stream=stream,
                    )
                )
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def delete_consumer(self, stream: str, durable: str) -> bool:
        """Remove a durable consumer (e.g. to rebuild a projection from the stream's start)."""
        try:
            return bool(await self.js.delete_consumer(stream, durable))
        except nats.js.errors.NotFoundError:
            return False
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot delete consumer {durable} on {stream}", exc) from exc

    async def _puller(
        self,
        stream: str,
        durable: str,
        filters: list[str],
        *,
        ack_wait: float,
        max_ack_pending: int,
    ) -> Puller:
        start: int | None = None
        if self.tenure is not None:
            # Lease mode: this epoch's own consumer, from where its predecessor's state ends
            # (a successor deletes it: a deposed owner can neither fetch nor ack).
            start = self.tenure.starts.get(durable)
            durable = self.tenure.consumer(durable)
        config = self._pull_config(
            durable, filters, ack_wait=ack_wait, max_ack_pending=max_ack_pending, start=start
        )

        async def create() -> Puller:
            try:
                await self.js.add_consumer(stream, config)
                sub = await self.js.pull_subscribe_bind(durable, stream=stream)
            except nats.errors.Error as exc:
                what = f"cannot create consumer {durable} on {stream}"
                raise self._closed_error(what, exc) from exc
            return Puller(sub, f"{stream}/{durable}")

        if self.tenure is not None:
            # A new owner's consumer: its lease's own deadlines decide how long to try.
            return await create()
        return await self.through_elections(f"consumer {durable}", create)

    @staticmethod
    def _pull_config(
        durable: str,
        filters: list[str],
        *,
        ack_wait: float,
        max_ack_pending: int,
        start: int | None = None,
    ) -> api.ConsumerConfig:
        """A durable pull consumer's config, from the stream's start (or from `start`)."""
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL
            if start is None
            else api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_wait=ack_wait,
            # Redelivery limits are ours to enforce (see workers): a work-queue stream keeps a
            # message past max_deliver, which would strand it.
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
            max_waiting=512,
        )
        if len(filters) == 1:
            config.filter_subject = filters[0]
        else:
            config.filter_subjects = filters
        return config

    # ---- reading a stream without a durable consumer -----------------------------------
    async def read_stream(
        self, stream: str, subject: str, *, start_seq: int = 1, limit: int = 500
    ) -> list[Delivery]:
        """Up to `limit` messages on `subject` (wildcards allowed) from `start_seq` on, oldest
        first, through a short-lived ordered consumer (logs pages, replays)."""
        out: list[Delivery] = []
        try:
            sub = await self.js.subscribe(
                subject,
                stream=stream,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                config=api.ConsumerConfig(opt_start_seq=max(1, start_seq)),
            )
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot read {subject} from {stream}", exc) from exc
        try:
            while len(out) < limit:
                try:
                    msg = await sub.next_msg(timeout=0.2)
                except (nats.errors.TimeoutError, TimeoutError):
                    break  # caught up
                delivery = delivery_of(msg)
                out.append(delivery)
                if delivery.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return out

    async def follow_stream(
        self,
        stream: str,
        subject: str,
        handler: Callable[[Delivery], Awaitable[None]],
        *,
        start_seq: int | None = None,
    ) -> Subscription:
        """Deliver every message on `subject` from the stream's start (or from `start_seq`),
        then new ones as they arrive (an ordered consumer: gaps are repaired by the client).
        Unsubscribe to stop."""

        async def on_message(msg: Msg) -> None:
            await handler(delivery_of(msg))

        if start_seq is None:
            policy, config = api.DeliverPolicy.ALL, None
        else:
            policy = api.DeliverPolicy.BY_START_SEQUENCE
            config = api.ConsumerConfig(opt_start_seq=max(1, start_seq))
        try:
            return await self.js.subscribe(
                subject,
                stream=stream,
                ordered_consumer=True,
                cb=on_message,
                deliver_policy=policy,
                config=config,
            )
        except nats.errors.Error as exc:
            raise BusError(f"cannot follow {subject} on {stream}: {exc}") from exc
