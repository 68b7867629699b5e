"""Identifiers: run ids (sortable, subject-token safe), deterministic ids, partitions."""

from __future__ import annotations

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
