"""The KV bucket (workflow specs, flags) and the object store (claim-checked payloads). Both are
opened, never created, here: creating them is `apply_topology`'s job. Opening one asks its
stream's leader, so an open made while a cluster elects that leader waits for it
(`events.bus.readiness`)."""

from __future__ import annotations

from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from events.bus.consumers import Consumers
from events.bus.readiness import ask_until_ready
from events.errors import BusError, BusUnavailable, TopologyMissing
from events.ids import artifact_key

EMPTY_LISTING_RETRIES = 3


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes
    revision: int


class Storage(Consumers):
    _kv_buckets: dict[str, KeyValue]
    _object_stores: dict[str, ObjectStore]

    async def _object_store(self, bucket: str) -> ObjectStore:
        """An object store of the topology, opened once (never created here)."""
        if bucket not in self._object_stores:
            try:
                self._object_stores[bucket] = await ask_until_ready(
                    f"object store {bucket}", lambda: self.js.object_store(bucket)
                )
            except nats.js.errors.BucketNotFoundError as exc:
                raise TopologyMissing(
                    f"object store {bucket} does not exist: run `conveyor topology apply`"
                ) from exc
            except nats.errors.Error as exc:
                raise self._closed_error(f"cannot open object store {bucket}", exc) from exc
        return self._object_stores[bucket]

    # ---- artifacts (claim checks for payloads over the inline limit) ---------------------
    async def _artifacts(self) -> ObjectStore:
        return await self._object_store(self.topology.artifacts_bucket)

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

    # ---- key/value ---------------------------------------------------------------------
    async def _kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv_buckets:
            try:
                self._kv_buckets[bucket] = await ask_until_ready(
                    f"bucket {bucket}", lambda: self.js.key_value(bucket)
                )
            except nats.js.errors.BucketNotFoundError as exc:
                raise TopologyMissing(
                    f"KV bucket {bucket} does not exist: run `conveyor topology apply`"
                ) from exc
            except nats.errors.Error as exc:
                raise self._closed_error(f"cannot open bucket {bucket}", exc) from exc
        return self._kv_buckets[bucket]

    async def kv_get(self, bucket: str, key: str) -> KvEntry | None:
        kv = await self._kv(bucket)
        try:
            entry = await kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            # A key that cannot exist holds nothing (a name taken from a message, such as a
            # workflow name with a space): not a broker failure to retry forever.
            return None
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot read {bucket}/{key}: {exc}") from exc
        if entry.value is None:  # nats-py 2.16 returns None while a delete marker exists
            return None
        return KvEntry(key, entry.value, entry.revision or 0)

    async def kv_get_from_leader(self, bucket: str, key: str) -> KvEntry | None:
        """`kv_get` answered by the bucket's stream leader. A plain get may be answered by any
        replica (direct get), and a follower that lags can miss a key just written: ask this
        when a miss must be sure (a workflow registered a moment ago through another node)."""
        try:
            msg = await self.js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}")
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot read {bucket}/{key} from its leader: {exc}") from exc
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return KvEntry(key, msg.data or b"", msg.seq or 0)

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        kv = await self._kv(bucket)
        try:
            return await kv.put(key, value)
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot write {bucket}/{key}: {exc}") from exc

    async def kv_create(self, bucket: str, key: str, value: bytes) -> int | None:
        """Create `key`; None when it already exists (someone else won the race)."""
        kv = await self._kv(bucket)
        try:
            return await kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot create {bucket}/{key}: {exc}") from exc

    async def kv_update(self, bucket: str, key: str, value: bytes, last: int) -> int | None:
        """Compare-and-set; None when `last` is no longer the key's revision."""
        kv = await self._kv(bucket)
        try:
            return await kv.update(key, value, last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot update {bucket}/{key}: {exc}") from exc

    async def kv_keys(self, bucket: str) -> list[str]:
        kv = await self._kv(bucket)
        try:
            for _ in range(EMPTY_LISTING_RETRIES):
                try:
                    return list(await kv.keys())
                except nats.js.errors.NoKeysError:
                    # nats-py's watcher can say "no more" before the first key it already holds
                    # (nats.py#842): an empty answer from a bucket whose stream holds messages
                    # is asked again (they may all be delete markers: then it is empty indeed).
                    if not await self._kv_has_messages(bucket):
                        return []
            return []
        except nats.errors.Error as exc:
            raise BusUnavailable(f"cannot list {bucket}: {exc}") from exc

    async def _kv_has_messages(self, bucket: str) -> bool:
        info = await self.js.stream_info(f"KV_{bucket}")
        return bool(info.state.messages)
