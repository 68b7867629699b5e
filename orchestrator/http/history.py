"""A run's event history: every CloudEvent of the run still in the event stream, paged by stream
sequence (what Temporal users know as a workflow's history).

The run's events are the subjects `<ns>.evt.*.*.*.<run_id>` (the run id is their last token), so
a page reads exactly the run's messages, in the order JetStream stored them. Dispatches are not
among them: they travel on the task queues and leave once a worker took them (the timeline shows
when each attempt was dispatched). Data is shown as JSON, a large value summarised; secrets that
an event may carry (credentials in an outbound webhook's URL) are masked.
"""

from __future__ import annotations

from typing import Any

from events.bus import Bus, Delivery
from events.codec import decode
from events.errors import MalformedEvent
from events.models import WEBHOOK_ATTEMPTED
from orchestrator.core.status import MAX_NODE_VALUE_BYTES, bounded

from .catalog import safe_url
from .views import HistoryEvent, HistoryPage

READ_CHUNK = 500


async def read_history(bus: Bus, run_id: str, *, after: int = 0, limit: int = 200) -> HistoryPage:
    topology = bus.topology
    chunk = await bus.read_stream(
        topology.events_stream,
        topology.run_events_filter(run_id),
        start_seq=after + 1,
        limit=min(limit, READ_CHUNK),
    )
    events = [history_event(delivery) for delivery in chunk]
    next_after = chunk[-1].stream_seq if chunk else after
    more = bool(chunk) and chunk[-1].num_pending > 0
    return HistoryPage(events=events, next_after=next_after, more=more)


def history_event(delivery: Delivery) -> HistoryEvent:
    headers = {k: str(v) for k, v in delivery.headers.items()}
    base: dict[str, Any] = {
        "seq": delivery.stream_seq,
        "nats_subject": delivery.subject,
        "headers": headers,
        "size": len(delivery.data),
    }
    try:
        event = decode(delivery.headers, delivery.data)
    except MalformedEvent as exc:
        return HistoryEvent(**base, problem=exc.reason, data=_text(delivery.data))
    try:
        data = event.json_data()
    except MalformedEvent:
        data = _text(event.data)
    if event.type == WEBHOOK_ATTEMPTED and isinstance(data, dict) and "url" in data:
        data = {**data, "url": safe_url(str(data["url"]))}
    node = data if isinstance(data, dict) else {}
    return HistoryEvent(
        **base,
        id=event.id,
        type=event.type,
        source=event.source,
        subject=event.subject,
        time=event.time,
        node_id=node.get("node_id") if isinstance(node.get("node_id"), str) else None,
        attempt=node.get("attempt") if isinstance(node.get("attempt"), int) else None,
        extensions=dict(event.extensions),
        data=bounded(data, MAX_NODE_VALUE_BYTES),
    )


def _text(body: bytes) -> Any:
    """A body that is not JSON, as text (summarised when large)."""
    return bounded(body.decode("utf-8", errors="replace"), MAX_NODE_VALUE_BYTES)
