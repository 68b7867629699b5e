"""What started a run, read from its `run.requested` envelope (pure).

The request event already says who sent it: its `source` names the publisher (the scheduler,
the router, the orchestrator starting a sub-workflow, the CLI, the HTTP API, a client), its
`subject` the schedule instant of a cron run, its data the parent of a sub-workflow or the
upstream event a trigger matched, and the `conveyoractor` extension who asked from the CLI or the
API. Recorded on the run once, when the run starts (like the trace, it is envelope metadata the
shell carries, not workflow data), and shown by the API, the CLI and the dashboard:

    {"kind": "cron", "source": "conveyor/scheduler", "event_id": "...", "subject": "...",
     "by": "schedule at 2026-01-01T03:00:00+01:00", "detail": {...}}

Kinds: `cron`, `event` (an upstream CloudEvent matched an `on` filter), `webhook` (the same, for
an event the webhook gateway ingested), `parent` (a sub-workflow), `cli`, `api`, `client` (the
Python client, or anyone else publishing a run.requested).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from events.models import RunRequested

TriggerKind = Literal["cron", "event", "webhook", "parent", "cli", "api", "client"]

# The sources Conveyor's own publishers stamp on run.requested (a unit test holds each to the
# constant of its publisher, so the two cannot drift apart).
SCHEDULER_SOURCE = "conveyor/scheduler"
ROUTER_SOURCE = "conveyor/router"
ORCHESTRATOR_SOURCE = "conveyor/orchestrator"
CLI_SOURCE = "conveyor/cli"
API_SOURCE = "conveyor/api"
CLIENT_SOURCE = "conveyor/client"
# The gateway names its events `webhook/<hook>` unless the hook sets a source of its own.
WEBHOOK_SOURCE_PREFIX = "webhook/"
# The CloudEvents extension carrying who asked (a user@host, an HTTP client's address).
ACTOR_EXTENSION = "conveyoractor"

_BY_SOURCE: dict[str, TriggerKind] = {
    SCHEDULER_SOURCE: "cron",
    CLI_SOURCE: "cli",
    API_SOURCE: "api",
    CLIENT_SOURCE: "client",
}
_UPSTREAM_KEYS = ("type", "source", "id", "subject")


def trigger_of(
    *,
    source: str,
    event_id: str,
    subject: str | None,
    extensions: Mapping[str, str],
    request: RunRequested,
) -> dict[str, Any]:
    """The trigger of the run `request` starts, as stored on the run."""
    kind, by, detail = _classify(source, subject, extensions.get(ACTOR_EXTENSION), request)
    return {
        "kind": kind,
        "source": source,
        "event_id": event_id,
        "subject": subject,
        "by": by,
        "detail": detail,
        # The caller's span, which the run's span continues (see events.tracing).
        "traceparent": extensions.get("traceparent"),
    }


def _classify(
    source: str, subject: str | None, actor: str | None, request: RunRequested
) -> tuple[TriggerKind, str, dict[str, Any]]:
    if request.parent is not None:
        parent = request.parent
        return (
            "parent",
            f"run {parent.run_id}, node {parent.node_id} (attempt {parent.attempt})",
            parent.model_dump(),
        )
    if source == ROUTER_SOURCE:
        return _upstream(request)
    kind = _BY_SOURCE.get(source, "client")
    if kind == "cron":
        return kind, f"schedule at {subject}" if subject else "schedule", {"instant": subject}
    detail: dict[str, Any] = {"actor": actor} if actor else {}
    who = actor or source
    return kind, who, detail


def _upstream(request: RunRequested) -> tuple[TriggerKind, str, dict[str, Any]]:
    """A run the router started for an upstream event, which is the run's input `event`."""
    event = request.input.get("event")
    if not isinstance(event, Mapping):
        return "event", "an upstream event", {}
    detail = {k: event.get(k) for k in _UPSTREAM_KEYS if event.get(k) is not None}
    upstream_source = str(event.get("source") or "")
    kind: TriggerKind = "webhook" if upstream_source.startswith(WEBHOOK_SOURCE_PREFIX) else "event"
    by = f"{event.get('type', 'an event')} from {upstream_source or 'an unknown source'}"
    return kind, by, detail
