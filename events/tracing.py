"""W3C trace context (`traceparent`) carried in the CloudEvents `traceparent` extension.

A run's trace starts at its trigger (or continues the caller's trace when the trigger carries
one); every task attempt is a child span whose id is derived from (run, node, attempt), so a
re-published dispatch keeps the same span. Workers tag the task's log lines and result events
with it, so a tracing backend can stitch trigger -> tasks -> logs together.
"""

from __future__ import annotations

import hashlib
import os
import re

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")


def is_traceparent(value: str | None) -> bool:
    if value is None:
        return False
    match = _TRACEPARENT.match(value)
    return bool(match) and match.group(1) != "0" * 32 and match.group(2) != "0" * 16  # type: ignore[union-attr]


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def child_traceparent(parent: str, *parts: str) -> str:
    """A child span of `parent`, its id derived from `parts` (deterministic)."""
    match = _TRACEPARENT.match(parent)
    if match is None:
        return parent
    span = hashlib.blake2b("/".join(parts).encode(), digest_size=8).hexdigest()
    return f"00-{match.group(1)}-{span}-{match.group(3)}"


def trace_id(traceparent: str) -> str | None:
    match = _TRACEPARENT.match(traceparent)
    return match.group(1) if match else None
