"""W3C trace context (`traceparent`) carried in the CloudEvents `traceparent` extension.

A run is a span of its own, whose id is derived from the run id (`run_traceparent`): the root
of a new trace, or a child of the caller's span when the trigger carried a `traceparent` (the
caller's trace goes on). Every task attempt is a child span of the run whose id is derived from
(run span, node, attempt), so a re-published dispatch keeps the same span, and two runs in one
trace (a parent and its sub-workflow) never share an attempt's span id. Workers tag the task's
log lines and result events with it, so a tracing backend can stitch trigger -> run -> tasks ->
logs together; with OpenTelemetry configured (`events.otel`) these spans are exported.
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
    """A child span of `parent`, its id derived from the parent's span and `parts`
    (deterministic: the same parent and parts give the same span)."""
    match = _TRACEPARENT.match(parent)
    if match is None:
        return parent
    return f"00-{match.group(1)}-{_span_id(match.group(2), *parts)}-{match.group(3)}"


def run_traceparent(run_id: str, caller: str | None = None) -> str:
    """The span of run `run_id`: in the caller's trace (`caller`, a valid traceparent) or a new
    one; both ids derived from the run id, so that whoever applies the run's request (its owner,
    a lease-mode successor replaying it, a projection) gives the run the same trace."""
    match = _TRACEPARENT.match(caller) if is_traceparent(caller) else None  # type: ignore[arg-type]
    trace, flags = (match.group(1), match.group(3)) if match else (_trace_id(run_id), "01")
    return f"00-{trace}-{_span_id('run', run_id)}-{flags}"


def _trace_id(run_id: str) -> str:
    trace = hashlib.blake2b(f"trace/{run_id}".encode(), digest_size=16).hexdigest()
    return trace if trace != "0" * 32 else "1" * 32  # all zeros is not a valid trace id


def trace_id(traceparent: str) -> str | None:
    match = _TRACEPARENT.match(traceparent)
    return match.group(1) if match else None


def span_id(traceparent: str) -> str | None:
    match = _TRACEPARENT.match(traceparent)
    return match.group(2) if match else None


def _span_id(*parts: str) -> str:
    span = hashlib.blake2b("/".join(parts).encode(), digest_size=8).hexdigest()
    return span if span != "0" * 16 else "1" * 16  # all zeros is not a valid span id
