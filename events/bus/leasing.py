"""What lease mode needs of JetStream: the lease table, the fences, consumers handed from one
epoch to the next, and partition snapshots in an object store (see `events.fencing` and
`orchestrator.runtime.ownership` for how they fit together).

The object store's reader in nats-py 2.16 concatenates chunk after chunk into one `bytes` (a
60 MB object took 6-10 s to read, quadratic in its size); `get_snapshot` reads the chunks through
one ordered consumer into a list and joins them once (0.27 s for the same object on a 3-node
cluster), checking the digest the writer recorded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.object_store import ObjectStore

from events.bus.storage import EMPTY_LISTING_RETRIES, KvEntry, Storage
from events.errors import BusError, BusUnavailable
from events.fencing import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    FENCE_CHECK_IN_FLIGHT,
    WRONG_LAST_SEQUENCE,
    epoch_of,
)


@dataclass(frozen=True, slots=True)
class ConsumerState:
    ack_floor: int  # every message up to this stream sequence was acked
    pending: int  # messages not yet delivered, or delivered and not yet acked


class Leasing(Storage):
    # ---- the lease table ---------------------------------------------------------------
    async def kv_entries(self, bucket: str, timeout: float = 5.0) -> dict[str, KvEntry]:
        """Every key of `bucket` with its value and revision, read from the stream's leader in
        one pass (an ordered consumer over the last message of each key). BusUnavailable when
        JetStream does not answer within `timeout`."""
        kv = await self._kv(bucket)
        entries: dict[str, KvEntry] = {}
        try:
            async with asyncio.timeout(timeout):
                for _ in range(EMPTY_LISTING_RETRIES):
                    watcher = await kv.watchall(ignore_deletes=True)
                    try:
                        async for entry in watcher:
                            if entry is None:  # the end of what the bucket held
                                break
                            entries[entry.key] = KvEntry(
                                entry.key, entry.value or b"", entry.revision or 0
                            )
                    finally:
                        await watcher.stop()  # type: ignore[no-untyped-call]
                    # nats-py's watcher can say "no more" before the first entry it already
                    # holds (nats.py#842): an empty answer from a stream with messages is asked
                    # again (they may all be delete markers: then it is empty indeed).
                    if entries or not await self._kv_has_messages(bucket):
                        break
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot read {bucket}: {exc!r}") from exc
        return entries

    async def kv_delete(self, bucket: str, key: str, last: int) -> bool:
        """Delete `key` if `last` is still its revision; False when it moved on."""
        kv = await self._kv(bucket)
        try:
            return await kv.delete(key, last=last)
        except nats.js.errors.APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                return False
            raise BusUnavailable(f"cannot delete {bucket}/{key}: {exc}") from exc
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot delete {bucket}/{key}: {exc}") from exc

    # ---- fences ------------------------------------------------------------------------
    async def last_fence(self, partition: int) -> tuple[int, bytes]:
        """The sequence and body of the last marker on the partition's fence subject
        ((0, b"") when there is none yet)."""
        topo = self.topology
        try:
            last = await self.js.get_last_msg(topo.events_stream, topo.fence_subject(partition))
        except nats.js.errors.NotFoundError:
            return 0, b""
        except nats.errors.Error as exc:
            raise self._closed_error("cannot read the fence", exc) from exc
        return int(last.seq or 0), bytes(last.data or b"")

    async def fence_holds(self) -> bool:
        """Whether this connection's tenure still holds: its marker is the last one on its
        partition's fence subject (True without a tenure)."""
        if self.tenure is None:
            return True
        return (await self.last_fence(self.tenure.partition))[0] == self.tenure.fence_seq

    async def publish_fence(self, partition: int, expected: int, marker: bytes) -> int | None:
        """Publish a marker on the partition's fence subject if `expected` is the sequence of the
        last one there (0: none); its sequence, or None when another marker came first."""
        subject = self.topology.fence_subject(partition)
        try:
            ack = await self.js.publish(
                subject, marker, headers={EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected)}
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in (WRONG_LAST_SEQUENCE, FENCE_CHECK_IN_FLIGHT):
                return None  # another marker, or a fenced message in flight: read again
            raise self._closed_error(f"cannot publish on {subject}", exc) from exc
        except (nats.js.errors.NoStreamResponseError, TimeoutError) as exc:
            raise BusUnavailable(f"no stream acknowledged {subject}: {exc!r}") from exc
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot publish on {subject}", exc) from exc
        return int(ack.seq)

    # ---- consumers handed from one epoch to the next -----------------------------------
    async def consumer_floors(self, stream: str, durable: str) -> dict[str, int]:
        """Each consumer of the family `durable` on `stream` (the static name and every
        `<durable>-eN`; every consumer for ""), with its ack floor: the stream sequence up to
        which it acked all."""
        try:
            await self.nc.flush(timeout=5)  # our own acks first
            infos = await self.js.consumers_info(stream)
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot list the consumers of {stream}", exc) from exc
        return {
            info.name: int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
            for info in infos
            if info.name and (not durable or epoch_of(info.name, durable) is not None)
        }

    async def consumer_state(self, stream: str, durable: str) -> ConsumerState:
        """Where `durable` stands (acks sent on this connection before the call included: it is
        flushed first)."""
        try:
            await self.nc.flush(timeout=5)
            info = await self.js.consumer_info(stream, durable)
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot read consumer {durable}", exc) from exc
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return ConsumerState(floor, pending)

    async def max_age(self, stream: str) -> float:
        """How long `stream` keeps a message, in seconds (0: for ever)."""
        return float((await self._stream_info(stream)).config.max_age or 0)

    async def last_sequence(self, stream: str) -> int:
        return int((await self._stream_info(stream)).state.last_seq or 0)

    async def _stream_info(self, stream: str) -> api.StreamInfo:
        try:
            return await self.js.stream_info(stream)
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot read stream {stream}", exc) from exc

    # ---- snapshots -----------------------------------------------------------------------
    async def _snapshot_store(self) -> ObjectStore:
        return await self._object_store(self.topology.snapshots_bucket)

    async def put_snapshot(self, name: str, data: bytes) -> None:
        store = await self._snapshot_store()
        try:
            await store.put(name, data)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot store snapshot {name}: {exc!r}") from exc

    async def get_snapshot(self, name: str, timeout: float = 60.0) -> bytes:
        """The snapshot `name`, its digest checked; BusError when it does not exist or is
        damaged, BusUnavailable when JetStream does not deliver it within `timeout`."""
        store = await self._snapshot_store()
        try:
            info = await store.get_info(name)
        except nats.js.errors.ObjectNotFoundError as exc:
            raise BusError(f"snapshot {name} does not exist") from exc
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot read snapshot {name}: {exc!r}") from exc
        if not info.size:
            return b""
        chunks = await self._read_chunks(
            f"$O.{self.topology.snapshots_bucket}.C.{info.nuid}", timeout
        )
        data = b"".join(chunks)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        if len(data) != info.size or (info.digest or "").split("=", 1)[-1] != digest:
            raise BusError(f"snapshot {name} is damaged: size or digest do not match")
        return data

    async def _read_chunks(self, subject: str, timeout: float) -> list[bytes]:
        chunks: list[bytes] = []
        done = asyncio.get_running_loop().create_future()

        async def on_chunk(msg: Msg) -> None:
            chunks.append(msg.data)
            if msg.metadata.num_pending == 0 and not done.done():
                done.set_result(None)

        stream = f"OBJ_{self.topology.snapshots_bucket}"
        try:
            sub = await self.js.subscribe(
                subject,
                stream=stream,
                ordered_consumer=True,
                cb=on_chunk,
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=1 << 34,
            )
        except nats.errors.Error as exc:
            raise self._closed_error(f"cannot read {subject}", exc) from exc
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError as exc:
            raise BusUnavailable(f"reading {subject} took over {timeout:g}s") from exc
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return chunks

    async def delete_snapshot(self, name: str) -> None:
        """Delete the snapshot `name`: its chunks, and its meta too (the object store would keep
        a deleted marker per name for ever, and every snapshot has a name of its own)."""
        store = await self._snapshot_store()
        bucket = self.topology.snapshots_bucket
        meta = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
        try:
            with contextlib.suppress(nats.js.errors.ObjectNotFoundError):
                await store.delete(name)
            await self.js.purge_stream(f"OBJ_{bucket}", subject=meta)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot delete snapshot {name}: {exc!r}") from exc

    async def snapshot_names(self, prefix: str = "") -> list[str]:
        """The names of the snapshots stored (whose upload completed: the meta is written last),
        from the subjects of their metas — one request, and none that needs to look the
        stream up by subject (`ObjectStore.list` does, which a least-privilege user may not)."""
        bucket = self.topology.snapshots_bucket
        head = f"$O.{bucket}.M."
        try:
            info = await self.js.stream_info(f"OBJ_{bucket}", subjects_filter=f"{head}>")
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot list snapshots: {exc!r}") from exc
        names = []
        for subject in info.state.subjects or {}:
            with contextlib.suppress(ValueError):
                names.append(base64.urlsafe_b64decode(subject[len(head) :]).decode())
        return sorted(n for n in names if n.startswith(prefix))
