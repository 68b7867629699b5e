"""A small taskiq result backend on a JetStream key-value bucket (the taskiq peer's, labelled so).

taskiq-nats ships `NATSObjectStoreResultBackend`: every result is an object-store object (a
metadata message and chunk messages per put, and an `is_result_ready` that downloads the whole
object). Under W2 and W3 — a thousand results, two hundred runs at once — it fails, so the peer
uses this backend instead: one KV `put` per result, one `get` per readiness check. It is the
smallest honest result backend on the same server; taskiq's own `wait_result` (and the
pipelines' map step) poll it, at the interval the driver chooses.
"""

from __future__ import annotations

from typing import Any

import nats  # type: ignore[import-not-found, unused-ignore]
from nats.js.errors import (  # type: ignore[import-not-found, unused-ignore]
    BucketNotFoundError,
    KeyNotFoundError,
)
from taskiq import AsyncResultBackend, ResultGetError  # type: ignore[import-not-found, unused-ignore]
from taskiq.result import TaskiqResult  # type: ignore[import-not-found, unused-ignore]


class JetStreamKVResultBackend(AsyncResultBackend[Any]):  # type: ignore[misc, unused-ignore]
    def __init__(self, servers: str, bucket: str = "tqbench_results") -> None:
        self.servers = servers
        self.bucket = bucket
        self.nc: Any = None
        self.kv: Any = None

    async def startup(self) -> None:
        self.nc = await nats.connect(self.servers, name="taskiq-kv-results")
        js = self.nc.jetstream()
        try:
            self.kv = await js.key_value(self.bucket)
        except BucketNotFoundError:
            # Every process may get here at once: creating with the same config is idempotent.
            self.kv = await js.create_key_value(bucket=self.bucket, history=1)

    async def shutdown(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        await self.kv.put(task_id, result.model_dump_json().encode())

    async def is_result_ready(self, task_id: str) -> bool:
        try:
            await self.kv.get(task_id)
        except KeyNotFoundError:
            return False
        return True

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        try:
            entry = await self.kv.get(task_id)
        except KeyNotFoundError as exc:
            raise ResultGetError from exc
        result: TaskiqResult[Any] = TaskiqResult[Any].model_validate_json(entry.value)
        if not with_logs:
            result.log = None
        return result
