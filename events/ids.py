"""Identifiers: run ids (sortable, subject-token safe), deterministic ids, partitions."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
import zlib

# One NATS subject token: run ids, queue and task names. The pattern alone is for schemas
# (OpenAPI, JSON Schema); Python matches anchor it with \Z (`$` accepts a trailing "\n").
TOKEN_PATTERN = r"[A-Za-z0-9_-]{1,128}"
_TOKEN = re.compile(rf"^{TOKEN_PATTERN}\Z")


def new_run_id() -> str:
    """A fresh run id: millisecond time prefix (sorts by creation) + 64 random bits."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def derived_id(*parts: str) -> str:
    """A deterministic id for the same parts: used where a retry must produce the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"d{digest[:31]}"


def run_id_for_key(workflow: str, idempotency_key: str) -> str:
    """The run id every request with this idempotency key resolves to."""
    return derived_id("run", workflow, idempotency_key)


def artifact_key(data: bytes) -> str:
    """The content address of an artifact (claim check) in the object store."""
    return "sha256-" + hashlib.sha256(data).hexdigest()


def is_token(value: str) -> bool:
    """True when `value` can stand as one NATS subject token (no dots, spaces, wildcards)."""
    return bool(_TOKEN.match(value))


def partition_of(run_id: str, partitions: int) -> int:
    return zlib.crc32(run_id.encode()) % partitions


# Memoised: the engine asks for the key of one event several times while applying it (dedupe,
# staging, its outcome), and the hash was 2% of the orchestrator's time; pure, so safe to cache.
@functools.lru_cache(maxsize=8192)
def event_key(source: str, event_id: str) -> str:
    """The identity of the event (`source`, `id`) as one short ASCII string.

    CloudEvents identify an event by its source and id together: the same id from two sources
    is two events. The key is JetStream's `Nats-Msg-Id` (so the server drops a repeat of the
    same event, and only that) and the orchestrator's processed-event key. It is the first 32
    hex digits of SHA-256 over the UTF-8 source, a NUL byte and the UTF-8 id: no two pairs give
    the same bytes (CloudEvents attributes cannot hold a NUL), and the key has a fixed length
    whatever the attributes' (a readable `source/id` pair would need escaping and could outgrow
    a header). Deterministic, so an outbox re-publish is still dropped as a duplicate."""
    joined = (
        source.encode("utf-8", "surrogatepass") + b"\0" + event_id.encode("utf-8", "surrogatepass")
    )
    return hashlib.sha256(joined).hexdigest()[:32]
