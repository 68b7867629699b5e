"""The JetStream topology: created or updated by one process (`apply_topology`: `conveyor
topology apply`, or the orchestrator on a single server), only checked by every other one
(`check_topology`), so that processes of two versions never fight over a stream's config and a
CLI never creates streams during a leader election. Plus inspection (stream and consumer
state) for the CLI, the API's gauges and the tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from nats.js import api

from events.bus.leasing import Leasing
from events.bus.pulling import Delivery
from events.errors import BusError, TopologyMissing
from events.topology import StreamPlan

_KV_HISTORY = 16
_log = structlog.get_logger("conveyor.topology")


class Admin(Leasing):
    async def apply_topology(self, timeout_s: float = 0.0) -> list[str]:
        """Create every stream, the KV bucket and the object store, or update them to this
        topology's config (replicas, limits); returns what was created or changed.

        A JetStream that cannot answer yet is asked again for up to `timeout_s`: a cluster
        that has just started elects its meta leader and learns its peers for a few seconds,
        and answers "temporarily unavailable", "no suitable peers" or nothing meanwhile. Any
        other refusal (say, 3 replicas on a single server) fails at once."""
        self._require_jetstream()
        changed: list[str] = []

        async def apply() -> list[str]:
            await self._apply_every_part(changed)
            return changed

        return await self.through_elections("the topology", apply, timeout_s)

    async def _apply_every_part(self, changed: list[str]) -> None:
        """Apply each stream and bucket, adding to `changed` what was created or changed (a
        retry after a partial attempt keeps the earlier attempt's part of the answer)."""
        for plan in self.topology.streams():
            if await self._apply_stream(plan):
                changed.append(plan.name)
        topo = self.topology
        for bucket, history in ((topo.workflows_bucket, _KV_HISTORY), (topo.leases_bucket, 1)):
            if await self._apply_kv(bucket, history):
                changed.append(bucket)
        for bucket in (topo.artifacts_bucket, topo.snapshots_bucket):
            if await self._apply_object_store(bucket):
                changed.append(bucket)

    async def check_topology(self, timeout_s: float = 30.0) -> None:
        """Wait until every stream, the KV bucket and the object store exist (a cluster may still
        be electing leaders, or `topology apply` may still be running); TopologyMissing after
        `timeout_s`, naming what is missing."""
        deadline = time.monotonic() + timeout_s
        pause = 0.25
        while True:
            missing = await self.missing_topology()
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise TopologyMissing(
                    f"JetStream has no {', '.join(missing)} after {timeout_s:g}s: create the "
                    "topology with `conveyor topology apply` (the orchestrator does it itself "
                    "on a single server), and check the namespace (CONVEYOR_NAMESPACE)"
                )
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(2.0, pause * 2)

    def _require_jetstream(self) -> None:
        """A server without JetStream answers every JetStream request with "no responders", as
        a cluster still forming may: told apart by the server's own INFO, so that waiting is
        only ever for something that can come."""
        # nats-py keeps the connected server's INFO only in a private attribute.
        info: dict[str, object] = getattr(self.nc, "_server_info", None) or {}
        if not info.get("jetstream"):
            url = self.nc.connected_url.netloc if self.nc.connected_url else "the server"
            raise BusError(
                f"the NATS server at {url} has JetStream disabled: Conveyor keeps its streams "
                "there (start nats-server with -js, or `jetstream {}` in its configuration)"
            )

    async def missing_topology(self) -> list[str]:
        """The streams and buckets of this topology that JetStream does not have (or cannot
        answer for right now)."""
        self._require_jetstream()
        missing = []
        for plan in self.topology.streams():
            if not await self._exists(plan.name):
                missing.append(f"stream {plan.name}")
        topo = self.topology
        for bucket, stream in (
            (topo.workflows_bucket, f"KV_{topo.workflows_bucket}"),
            (topo.leases_bucket, f"KV_{topo.leases_bucket}"),
            (topo.artifacts_bucket, f"OBJ_{topo.artifacts_bucket}"),
            (topo.snapshots_bucket, f"OBJ_{topo.snapshots_bucket}"),
        ):
            if not await self._exists(stream):
                missing.append(f"bucket {bucket}")
        return missing

    async def _exists(self, stream: str) -> bool:
        try:
            await self.js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return False
        except nats.errors.Error as exc:
            if self.nc.is_closed:
                raise self._closed_error(f"cannot look up stream {stream}", exc) from exc
            return False  # no JetStream (yet), or no leader: same answer, ask again
        return True

    async def _apply_stream(self, plan: StreamPlan) -> bool:
        config = api.StreamConfig(
            name=plan.name,
            subjects=list(plan.subjects),
            retention=api.RetentionPolicy.WORK_QUEUE
            if plan.work_queue
            else api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=plan.max_age_s,
            duplicate_window=plan.duplicate_window_s,
            num_replicas=plan.replicas,
            allow_msg_ttl=None,
            max_msgs_per_subject=plan.max_msgs_per_subject,
            allow_direct=plan.allow_direct or None,
        )
        try:
            try:
                info = await self.js.stream_info(plan.name)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(config)
                return True
            current = info.config
            if (
                list(current.subjects or []) == list(plan.subjects)
                and (current.num_replicas or 1) == plan.replicas
                and (current.max_age or 0) == plan.max_age_s
                and (current.duplicate_window or 0) == plan.duplicate_window_s
                and (current.max_msgs_per_subject or -1) == plan.max_msgs_per_subject
                and bool(current.allow_direct) == plan.allow_direct
            ):
                return False
            await self.js.update_stream(config)
            return True
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot create stream {plan.name}", exc) from exc

    async def _apply_kv(self, bucket: str, history: int) -> bool:
        # Reads go to the stream's leader (no direct gets from followers): a lease is judged
        # by revisions read where they are written (see orchestrator.runtime.leases).
        config = api.KeyValueConfig(bucket=bucket, history=history, replicas=self.topology.replicas)
        try:
            try:
                info = await self.js.stream_info(f"KV_{bucket}")
            except nats.js.errors.NotFoundError:
                await self.js.create_key_value(config)
                return True
            if (info.config.num_replicas or 1) == self.topology.replicas:
                return False
            # A KV bucket is a stream: its replicas change like any stream's.
            await self.js.update_stream(
                api.StreamConfig.from_response(
                    {**info.config.as_dict(), "num_replicas": self.topology.replicas}
                )
            )
            return True
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot create bucket {bucket}", exc) from exc

    async def _apply_object_store(self, bucket: str) -> bool:
        try:
            try:
                info = await self.js.stream_info(f"OBJ_{bucket}")
            except nats.js.errors.NotFoundError:
                await self.js.create_object_store(
                    bucket,
                    config=api.ObjectStoreConfig(
                        bucket=bucket, storage=api.StorageType.FILE, replicas=self.topology.replicas
                    ),
                )
                return True
            if (info.config.num_replicas or 1) == self.topology.replicas:
                return False
            await self.js.update_stream(
                api.StreamConfig.from_response(
                    {**info.config.as_dict(), "num_replicas": self.topology.replicas}
                )
            )
            return True
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot create object store {bucket}", exc) from exc

    # ---- inspection (tests, CLI, gauges) ------------------------------------------------
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
                    stream=stream,
                )
            )
        return out

    async def stream_replicas(self, stream: str) -> tuple[int, str | None]:
        """(replicas, current leader's server name) of a stream."""
        try:
            info = await self.js.stream_info(stream)
        except nats.errors.Error as exc:
            raise BusError(f"no stream {stream}: {exc}") from exc
        leader = info.cluster.leader if info.cluster is not None else None
        return int(info.config.num_replicas or 1), leader

    async def replicas_current(self, stream: str) -> bool:
        """Whether the stream has a leader and every replica is caught up with it (after a node
        rejoined a cluster: losing another node before then would lose the quorum)."""
        try:
            info = await self.js.stream_info(stream)
        except nats.errors.Error:
            return False
        cluster = info.cluster
        if cluster is None:
            return True  # not clustered: nothing to catch up with
        replicas = cluster.replicas or []
        return bool(cluster.leader) and all(r.current for r in replicas)

    async def task_backlogs(self) -> dict[tuple[str, str], int]:
        """(queue, task) -> messages waiting or in flight, for every task some worker has served
        (a task consumer exists once a worker bound it)."""
        try:
            infos = await self.js.consumers_info(self.topology.tasks_stream)
        except nats.errors.Error as exc:
            raise BusError(f"cannot list consumers: {exc}") from exc
        out: dict[tuple[str, str], int] = {}
        for info in infos:
            served = self.topology.parse_task_consumer(info.name or "")
            if served is not None:
                out[served] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return dict(sorted(out.items()))

    async def queue_depths(self) -> dict[str, int]:
        """Queue -> tasks waiting or in flight on it (summed over its tasks' consumers)."""
        depths: dict[str, int] = {}
        for (queue, _), backlog in (await self.task_backlogs()).items():
            depths[queue] = depths.get(queue, 0) + backlog
        return depths

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

    async def consumer_states(self, stream: str) -> list[ConsumerState]:
        """Every durable consumer of `stream` with its backlog: what the workers page shows of
        each task queue. The age is that of the oldest message not yet delivered (None when
        nothing waits), read by subject from the stream, so it costs one request a consumer."""
        try:
            infos = await self.js.consumers_info(stream)
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot list the consumers of {stream}", exc) from exc
        now = time.time()
        out = []
        for info in sorted(infos, key=lambda i: i.name or ""):
            config = info.config
            filters = list(config.filter_subjects or []) or (
                [config.filter_subject] if config.filter_subject else []
            )
            waiting_since = await self._oldest_waiting(stream, info, filters)
            out.append(
                ConsumerState(
                    name=info.name or "",
                    filters=tuple(filters),
                    pending=int(info.num_pending or 0),
                    ack_pending=int(info.num_ack_pending or 0),
                    redelivered=int(info.num_redelivered or 0),
                    waiting_pulls=int(info.num_waiting or 0),
                    max_ack_pending=int(config.max_ack_pending or 0),
                    oldest_waiting_s=None
                    if waiting_since is None
                    else max(0.0, now - waiting_since),
                    last_active=_epoch(info.delivered.last_active if info.delivered else None),
                )
            )
        return out

    async def _oldest_waiting(
        self, stream: str, info: api.ConsumerInfo, filters: list[str]
    ) -> float | None:
        if not info.num_pending or not filters:
            return None
        after = (info.delivered.stream_seq if info.delivered else 0) + 1
        found: list[float] = []
        for subject in filters:
            try:
                raw = await self.js.get_msg(stream, seq=after, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                continue
            except nats.errors.Error as exc:
                raise self._closed_error(f"cannot read {stream}", exc) from exc
            if raw.time is not None:
                found.append(raw.time.timestamp())
        return min(found, default=None)


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """A durable consumer's backlog: `pending` not yet delivered, `ack_pending` delivered and not
    yet settled (running), `waiting_pulls` pull requests of idle workers parked on it."""

    name: str
    filters: tuple[str, ...]
    pending: int
    ack_pending: int
    redelivered: int
    waiting_pulls: int
    max_ack_pending: int
    oldest_waiting_s: float | None
    last_active: float | None


def _epoch(moment: dt.datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None
