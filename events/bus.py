"""The only module that imports nats-py: connection, topology, publish, pull, KV, request/reply.

Every nats-py exception is translated into `events.errors` here, so the rest of Conveyor
never depends on the client library's types.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from events.acks import Ack, Decision, Nak, Outcome, Term, settle
from events.codec import encode
from events.envelope import CloudEvent
from events.errors import BusError, BusUnavailable
from events.ids import artifact_key
from events.topology import StreamPlan, Topology

PublishItem = tuple[str, Mapping[str, str], bytes]
ORCHESTRATOR_ACK_WAIT_S = 1.5


@dataclass(slots=True)
class Delivery:
    """One message handed to us by a pull consumer."""

    subject: str
    headers: Mapping[str, str]
    data: bytes
    num_delivered: int
    stream_seq: int
    _msg: Msg | None  # None for a message read by sequence (inspection): nothing to settle

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

    def __init__(self, sub: JetStreamContext.PullSubscription) -> None:
        self._sub = sub

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        try:
            msgs = await self._sub.fetch(batch=batch, timeout=max(timeout, 0.01))
        except TimeoutError:  # nats.errors.TimeoutError derives from it too
            return []
        except nats.errors.Error as exc:
            raise BusUnavailable(f"fetch failed: {exc}") from exc
        return [_delivery(m) for m in msgs]

    async def close(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


def _delivery(msg: Msg) -> Delivery:
    meta = msg.metadata
    return Delivery(
        subject=msg.subject,
        headers={k: str(v) for k, v in (msg.headers or {}).items()},
        data=msg.data,
        num_delivered=meta.num_delivered or 1,
        stream_seq=meta.sequence.stream if meta.sequence else 0,
        _msg=msg,
    )


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes
    revision: int


class Bus:
    """A connection to NATS bound to one `Topology`."""

    def __init__(self, nc: Client, topology: Topology) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.topology = topology
        self._kv: dict[str, KeyValue] = {}
        self._objects: ObjectStore | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        topology: Topology | None = None,
        *,
        name: str = "conveyor",
        connect_timeout_s: float = 5.0,
    ) -> Bus:
        """Connect, failing with BusUnavailable after `connect_timeout_s`; once connected, the
        client reconnects forever (a server restart is an outage, not an exit)."""
        attempts = max(1, int(connect_timeout_s / 0.5))
        try:
            nc = await nats.connect(
                url,
                name=name,
                connect_timeout=2,
                # Finite for the first connection, so a wrong URL fails fast...
                max_reconnect_attempts=attempts,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=_quiet,
                disconnected_cb=_noop,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise BusUnavailable(f"cannot connect to NATS at {url}: {detail}") from exc
        # ...and unlimited afterwards. nats-py reads this option at each reconnect.
        nc.options["max_reconnect_attempts"] = -1
        return cls(nc, topology or Topology())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()

    # ---- topology ----------------------------------------------------------------------
    async def ensure_topology(self) -> None:
        """Create (or update in place) the streams and buckets; safe to call from every process."""
        for plan in self.topology.streams():
            await self._ensure_stream(plan)
        await self._ensure_kv(self.topology.workflows_bucket)

    async def _ensure_stream(self, plan: StreamPlan) -> None:
        config = api.StreamConfig(
            name=plan.name,
            subjects=list(plan.subjects),
            retention=api.RetentionPolicy.WORK_QUEUE
            if plan.work_queue
            else api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=plan.max_age_s,
            duplicate_window=plan.duplicate_window_s,
            allow_msg_ttl=None,
        )
        try:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)
        except nats.errors.Error as exc:
            raise BusError(f"cannot create stream {plan.name}: {exc}") from exc

    # ---- artifacts (claim checks for payloads over the inline limit) ---------------------
    async def _artifacts(self) -> ObjectStore:
        if self._objects is None:
            bucket = self.topology.artifacts_bucket
            try:
                try:
                    self._objects = await self.js.object_store(bucket)
                except nats.js.errors.BucketNotFoundError:
                    self._objects = await self.js.create_object_store(
                        bucket, config=api.ObjectStoreConfig(bucket=bucket)
                    )
            except nats.errors.Error as exc:
                raise BusError(f"cannot open object store {bucket}: {exc}") from exc
        return self._objects

    async def put_artifact(self, data: bytes) -> str:
        """Store `data` content-addressed; returns its key (`sha256-<hex>`). Idempotent."""
        key = artifact_key(data)
        store = await self._artifacts()
        try:
            try:
                await store.get_info(key)
                return key  # already there: the same content under the same name
            except nats.js.errors.ObjectNotFoundError:
                pass
            await store.put(key, data)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot store artifact {key}: {exc}") from exc
        return key

    async def get_artifact(self, key: str) -> bytes:
        store = await self._artifacts()
        try:
            result = await store.get(key)
        except nats.js.errors.ObjectNotFoundError as exc:
            raise BusError(f"artifact {key} does not exist") from exc
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot read artifact {key}: {exc}") from exc
        return bytes(result.data or b"")

    async def _ensure_kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            try:
                try:
                    self._kv[bucket] = await self.js.key_value(bucket)
                except nats.js.errors.BucketNotFoundError:
                    self._kv[bucket] = await self.js.create_key_value(
                        api.KeyValueConfig(bucket=bucket, history=16)
                    )
            except nats.errors.Error as exc:
                raise BusError(f"cannot open bucket {bucket}: {exc}") from exc
        return self._kv[bucket]

    async def orchestrator_puller(self, partition: int, projection: bool = False) -> Puller:
        topo = self.topology
        return await self._puller(
            topo.events_stream,
            topo.projection_consumer(partition)
            if projection
            else topo.orchestrator_consumer(partition),
            topo.orchestrator_filters(partition),
            # Short: what a killed orchestrator had fetched is redelivered to its replacement
            # within seconds (recovery). The engine heartbeats a batch that takes longer.
            ack_wait=ORCHESTRATOR_ACK_WAIT_S,
            max_ack_pending=20_000,
        )

    async def delete_consumer(self, stream: str, durable: str) -> bool:
        """Remove a durable consumer (e.g. to rebuild a projection from the stream's start)."""
        try:
            return bool(await self.js.delete_consumer(stream, durable))
        except nats.js.errors.NotFoundError:
            return False
        except nats.errors.Error as exc:
            raise BusError(f"cannot delete consumer {durable} on {stream}: {exc}") from exc

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
            ack_wait=30.0,
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

    async def queue_puller(self, queue: str, max_ack_pending: int = 1_000) -> Puller:
        topo = self.topology
        return await self._puller(
            topo.tasks_stream,
            topo.queue_consumer(queue),
            [topo.task_subject(queue)],
            ack_wait=topo.task_ack_wait_s,
            max_ack_pending=max_ack_pending,
        )

    async def _puller(
        self,
        stream: str,
        durable: str,
        filters: list[str],
        *,
        ack_wait: float,
        max_ack_pending: int,
    ) -> Puller:
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
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
        try:
            await self.js.add_consumer(stream, config)
            sub = await self.js.pull_subscribe_bind(durable, stream=stream)
        except nats.errors.Error as exc:
            raise BusError(f"cannot create consumer {durable} on {stream}: {exc}") from exc
        return Puller(sub)

    # ---- publish -----------------------------------------------------------------------
    async def publish(self, subject: str, event: CloudEvent, timeout: float = 5.0) -> bool:
        """Publish durably; returns True when JetStream dropped it as a duplicate."""
        headers, body = encode(event)
        return await self.publish_raw(subject, headers, body, timeout)

    async def publish_raw(
        self, subject: str, headers: Mapping[str, str], body: bytes, timeout: float = 5.0
    ) -> bool:
        if not self.nc.is_connected:
            # Fail now rather than after the timeout: a caller such as the webhook gateway
            # answers 503 at once, and the sender retries.
            raise BusUnavailable(f"not connected to NATS (reconnecting); {subject} not published")
        try:
            ack = await self.js.publish(subject, body, timeout=timeout, headers=dict(headers))
        except (
            nats.js.errors.NoStreamResponseError,
            nats.errors.TimeoutError,
            TimeoutError,
        ) as exc:
            raise BusUnavailable(f"no stream acknowledged {subject}: {exc!r}") from exc
        except nats.errors.Error as exc:
            raise BusError(f"publish to {subject} failed: {exc}") from exc
        return bool(ack.duplicate)

    async def publish_pipelined(
        self, subject: str, event: CloudEvent, timeout: float = 5.0
    ) -> Callable[[], Awaitable[bool]]:
        """Send now, wait for JetStream's ack later: returns the waiter (True = duplicate).

        For publishes nobody needs to wait for before doing the next thing (task.started)."""
        headers, body = encode(event)
        try:
            future = await self.js.publish_async(
                subject, body, headers=dict(headers), wait_stall=timeout
            )
        except nats.errors.Error as exc:
            raise BusError(f"publish to {subject} failed: {exc}") from exc

        async def acked() -> bool:
            try:
                ack = await asyncio.wait_for(future, timeout)
            except (nats.js.errors.NoStreamResponseError, TimeoutError) as exc:
                raise BusUnavailable(f"no stream acknowledged {subject}: {exc!r}") from exc
            except nats.errors.Error as exc:
                raise BusError(f"publish to {subject} failed: {exc}") from exc
            return bool(ack.duplicate)

        return acked

    async def send_many(
        self, items: Sequence[PublishItem], timeout: float = 10.0
    ) -> Callable[[], Awaitable[None]]:
        """Send every message now (pipelined) and return a waiter for all their acks, so the
        caller can get on with its next step while JetStream acknowledges."""
        futures: list[asyncio.Future[api.PubAck]] = []
        try:
            for subject, headers, body in items:
                futures.append(
                    await self.js.publish_async(
                        subject, body, headers=dict(headers), wait_stall=timeout
                    )
                )
        except nats.errors.Error as exc:
            for fut in futures:
                fut.cancel()
            raise BusError(f"pipelined publish failed: {exc}") from exc

        async def acked() -> None:
            try:
                await asyncio.wait_for(asyncio.gather(*futures), timeout)
            except (nats.js.errors.NoStreamResponseError, TimeoutError) as exc:
                raise BusUnavailable(
                    f"JetStream did not ack {len(futures)} messages: {exc!r}"
                ) from exc
            except nats.errors.Error as exc:
                raise BusError(f"pipelined publish failed: {exc}") from exc
            finally:
                for fut in futures:
                    if not fut.done():
                        fut.cancel()

        return acked

    async def publish_many(self, items: Sequence[PublishItem], timeout: float = 10.0) -> None:
        """Publish pipelined and wait until JetStream acked every message (or raise)."""
        if not items:
            return
        if len(items) == 1:
            subject, headers, body = items[0]
            await self.publish_raw(subject, headers, body, timeout)
            return
        acked = await self.send_many(items, timeout)
        await acked()

    async def publish_core(
        self, subject: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Fire-and-forget core NATS publish (notifications nobody must rely on)."""
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(subject, body, headers=dict(headers) if headers else None)

    # ---- request / reply and plain subscriptions ---------------------------------------
    async def request(self, subject: str, payload: bytes, timeout: float = 5.0) -> bytes:
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise BusUnavailable(
                f"nothing is serving {subject} (is the orchestrator running?)"
            ) from exc
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise BusUnavailable(f"no answer on {subject} within {timeout}s") from exc
        return msg.data

    async def serve(
        self,
        subject: str,
        handler: Callable[[bytes], Awaitable[bytes]],
        queue: str = "",
    ) -> Subscription:
        async def on_request(msg: Msg) -> None:
            reply = await handler(msg.data)
            if msg.reply:
                with contextlib.suppress(nats.errors.Error):
                    await msg.respond(reply)

        return await self.nc.subscribe(subject, queue=queue, cb=on_request)

    async def subscribe(
        self, subject: str, handler: Callable[[str, Mapping[str, str], bytes], Awaitable[None]]
    ) -> Subscription:
        async def on_message(msg: Msg) -> None:
            await handler(
                msg.subject, {k: str(v) for k, v in (msg.headers or {}).items()}, msg.data
            )

        return await self.nc.subscribe(subject, cb=on_message)

    async def flush(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.nc.flush(timeout=5)

    # ---- key/value ---------------------------------------------------------------------
    async def kv_get(self, bucket: str, key: str) -> KvEntry | None:
        kv = await self._ensure_kv(bucket)
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot read {bucket}/{key}: {exc}") from exc
        if entry.value is None:  # nats-py 2.16 returns None while a delete marker exists
            return None
        return KvEntry(key, entry.value, entry.revision or 0)

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        kv = await self._ensure_kv(bucket)
        try:
            return await kv.put(key, value)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot write {bucket}/{key}: {exc}") from exc

    async def kv_create(self, bucket: str, key: str, value: bytes) -> int | None:
        """Create `key`; None when it already exists (someone else won the race)."""
        kv = await self._ensure_kv(bucket)
        try:
            return await kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot create {bucket}/{key}: {exc}") from exc

    async def kv_update(self, bucket: str, key: str, value: bytes, last: int) -> int | None:
        """Compare-and-set; None when `last` is no longer the key's revision."""
        kv = await self._ensure_kv(bucket)
        try:
            return await kv.update(key, value, last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot update {bucket}/{key}: {exc}") from exc

    async def kv_keys(self, bucket: str) -> list[str]:
        kv = await self._ensure_kv(bucket)
        try:
            return list(await kv.keys())
        except nats.js.errors.NoKeysError:
            return []
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot list {bucket}: {exc}") from exc

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
            raise BusError(f"cannot read {subject} from {stream}: {exc}") from exc
        try:
            while len(out) < limit:
                try:
                    msg = await sub.next_msg(timeout=0.2)
                except (nats.errors.TimeoutError, TimeoutError):
                    break  # caught up
                meta = msg.metadata
                out.append(_delivery(msg))
                if meta.num_pending == 0:
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
    ) -> Subscription:
        """Deliver every message on `subject` from the stream's start, then new ones as they
        arrive (an ordered consumer: gaps are repaired by the client). Unsubscribe to stop."""

        async def on_message(msg: Msg) -> None:
            await handler(_delivery(msg))

        try:
            return await self.js.subscribe(
                subject,
                stream=stream,
                ordered_consumer=True,
                cb=on_message,
                deliver_policy=api.DeliverPolicy.ALL,
            )
        except nats.errors.Error as exc:
            raise BusError(f"cannot follow {subject} on {stream}: {exc}") from exc

    # ---- inspection (tests, CLI) -------------------------------------------------------
    async def stream_messages(self, stream: str, subject: str | None = None) -> list[Delivery]:
        """Every message currently in `stream` (optionally one subject), oldest first."""
        out: list[Delivery] = []
        try:
            info = await self.js.stream_info(stream)
        except nats.errors.Error as exc:
            raise BusError(f"no stream {stream}: {exc}") from exc
        if not info.state.messages:
            return out
        first, last = max(1, info.state.first_seq), info.state.last_seq
        for seq in range(first, last + 1):
            try:
                raw = await self.js.get_msg(stream, seq=seq)
            except nats.js.errors.NotFoundError:
                continue
            if subject is not None and raw.subject != subject:
                continue
            out.append(
                Delivery(
                    raw.subject or "",
                    {k: str(v) for k, v in (raw.headers or {}).items()},
                    raw.data or b"",
                    1,
                    seq,
                    None,
                )
            )
        return out

    async def queues(self) -> list[str]:
        """The queues that have a worker consumer."""
        prefix = "queue-"
        try:
            infos = await self.js.consumers_info(self.topology.tasks_stream)
        except nats.errors.Error as exc:
            raise BusError(f"cannot list consumers: {exc}") from exc
        names = [i.name or "" for i in infos]
        return sorted(n[len(prefix) :] for n in names if n.startswith(prefix))

    async def stream_size(self, stream: str) -> int:
        try:
            info = await self.js.stream_info(stream)
        except nats.errors.Error as exc:
            raise BusError(f"no stream {stream}: {exc}") from exc
        return int(info.state.messages)

    async def pending(self, stream: str, durable: str) -> int:
        """Messages not yet delivered plus delivered but unacked: the consumer's backlog."""
        try:
            info = await self.js.consumer_info(stream, durable)
        except nats.errors.Error as exc:
            raise BusError(f"no consumer {durable} on {stream}: {exc}") from exc
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def _quiet(exc: Exception) -> None:
    """nats-py logs reconnect errors itself; our own logs report what matters."""


async def _noop() -> None:
    pass
