"""Server-sent events: run events as they happen, and a live tail of task logs.

Run events come from a core-NATS subscription on the event subjects (all runs, run-level
events only, or one run). Each SSE message (`event: events`) carries a JSON *list* of event
summaries: under a 10,000-task fan-out the browser gets a few messages per second holding
hundreds of events, not tens of thousands of tiny ones. Summaries never carry inputs or
outputs (they can be large); a client reads those from the API when it needs them.

A stream opens with `event: ready` once its subscription is registered on the server, so a
client that (re)reads state after `ready` misses nothing in between. A client that reads too
slowly gets `event: resync` instead of an unbounded queue: some events were dropped, re-read
the state.

The log tail is gap-free and resumable: it pages the log stream by sequence (each message's
`id:` is its sequence, so `Last-Event-ID` resumes it), and a core subscription on the run's
log subjects only wakes it up when something new arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from fastapi.sse import ServerSentEvent

from events.bus import Bus
from events.codec import decode
from events.errors import MalformedEvent

from .logs import read_logs

Scope = Literal["all", "runs"]
QUEUE_LIMIT = 20_000
BATCH_LIMIT = 500
# A tail re-reads the stream this often even without a wake-up: a backstop should a core
# message be lost (core NATS is at-most-once), never the way lines normally arrive.
TAIL_BACKSTOP_S = 5.0
_CLOSE: dict[str, Any] = {"__close__": True}


def summarise(subject: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
    """What the dashboard needs of one event, without inputs or outputs; None if malformed."""
    try:
        event = decode(headers, body)
        data = event.json_data()
    except MalformedEvent:
        return None
    if not isinstance(data, dict):
        data = {}
    kind = event.type.removeprefix("io.conveyor.")
    out: dict[str, Any] = {
        "type": kind,
        "id": event.id,
        "time": event.time,
        # The run id is the subject's last token for every Conveyor event (see topology).
        "run_id": subject.rsplit(".", 1)[-1],
    }
    for name in ("node_id", "attempt", "worker", "workflow", "version", "reason", "kind"):
        if data.get(name) is not None:
            out[name] = data[name]
    error = data.get("error")
    if isinstance(error, dict):
        out["error"] = {k: error.get(k) for k in ("type", "message", "retryable")}
    return out


class Live:
    """The app's live streams; `close()` ends them all (server shutdown)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.closed = False
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._wakes: set[asyncio.Event] = set()

    @property
    def active(self) -> int:
        """Streams open now (each holds a NATS subscription until its client goes away)."""
        return len(self._queues) + len(self._wakes)

    def close(self) -> None:
        self.closed = True
        for queue in self._queues:
            while True:
                try:
                    queue.put_nowait(_CLOSE)
                    break
                except asyncio.QueueFull:
                    queue.get_nowait()  # make room: the stream is ending anyway
        for wake in self._wakes:
            wake.set()

    def event_filter(self, run_id: str | None, scope: Scope) -> str:
        topology = self.bus.topology
        if run_id is not None:
            return topology.run_events_filter(run_id)
        if scope == "runs":
            return f"{topology.namespace}.evt.*.run.*.*"
        return f"{topology.namespace}.evt.>"

    async def run_events(
        self, run_id: str | None, scope: Scope = "all"
    ) -> AsyncIterator[ServerSentEvent]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        dropped = False

        async def on_message(subject: str, headers: Mapping[str, str], body: bytes) -> None:
            nonlocal dropped
            item = summarise(subject, headers, body)
            if item is None:
                return
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                dropped = True

        self._queues.add(queue)
        sub = await self.bus.subscribe(self.event_filter(run_id, scope), on_message)
        try:
            await self.bus.flush()  # the server has the subscription before we say "ready"
            yield ServerSentEvent(event="ready", data={"run_id": run_id, "scope": scope})
            while not self.closed:
                batch = [await queue.get()]
                while len(batch) < BATCH_LIMIT and not queue.empty():
                    batch.append(queue.get_nowait())
                if any(item is _CLOSE for item in batch):
                    return
                yield ServerSentEvent(event="events", raw_data=json.dumps(batch))
                if dropped:
                    dropped = False
                    yield ServerSentEvent(event="resync", data={"reason": "client too slow"})
        finally:
            self._queues.discard(queue)
            with contextlib.suppress(Exception):  # the connection may be closing already
                await sub.unsubscribe()

    async def log_tail(
        self, run_id: str, node: str | Sequence[str] | None, after: int
    ) -> AsyncIterator[ServerSentEvent]:
        wake = asyncio.Event()

        async def on_line(subject: str, headers: Mapping[str, str], body: bytes) -> None:
            wake.set()

        self._wakes.add(wake)
        sub = await self.bus.subscribe(self.bus.topology.log_subject(run_id, "*"), on_line)
        try:
            await self.bus.flush()
            yield ServerSentEvent(event="ready", data={"run_id": run_id, "after": after})
            cursor = after
            while not self.closed:
                wake.clear()
                page = await read_logs(self.bus, run_id, node=node, after=cursor, limit=500)
                cursor = page.next_after
                if page.lines:
                    body = json.dumps([line.model_dump() for line in page.lines])
                    yield ServerSentEvent(event="logs", id=str(cursor), raw_data=body)
                if page.more:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), TAIL_BACKSTOP_S)
        finally:
            self._wakes.discard(wake)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
