"""What a worker says about an attempt: task.started, task.completed, task.failed.

Each event has a deterministic id (`<run_id>:<node_id>:<attempt>:<verb>`): a redelivered attempt
that runs again publishes the same ids, which JetStream drops as duplicates (and the
orchestrator would ignore anyway). Each carries the run id and, when the dispatch had one, the
attempt's trace context, so the run's trace stays whole. An output over the inline limit goes
to the object store, and the event carries its key (claim check). A short attempt folds its
start into its result (`DeferredStart`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from events.bus import Bus
from events.envelope import CloudEvent
from events.errors import BusClosed, BusError, BusUnavailable
from events.models import (
    INLINE_LIMIT_BYTES,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_STARTED,
    ErrorInfo,
    TaskCompleted,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    WireModel,
)


class Reporter:
    def __init__(self, bus: Bus, worker: str, retry_s: float = 30.0) -> None:
        self.bus = bus
        self.worker = worker
        # How long a finished attempt keeps trying to publish its result (a leader election).
        self.retry_s = retry_s

    async def started(
        self, dispatched: TaskDispatched, trace: str | None
    ) -> Callable[[], Awaitable[bool]]:
        """Sent without waiting for its ack (the task starts at once); returns the waiter, to
        await before the result is published, so that the start comes first in the log."""
        data = TaskStarted(**self._attempt(dispatched))
        event = self._event(TASK_STARTED, dispatched, "started", data, trace)
        subject = self.bus.topology.event_subject(TASK_STARTED, dispatched.run_id)
        return await self.bus.publish_pipelined(subject, event)

    async def completed(
        self,
        dispatched: TaskDispatched,
        output: Any,
        encoded: bytes,
        trace: str | None,
        ran_s: float | None = None,
    ) -> None:
        output_ref = None
        if len(encoded) > INLINE_LIMIT_BYTES:
            output, output_ref = None, await self.bus.put_artifact(encoded)
        data = TaskCompleted(
            **self._attempt(dispatched), output=output, output_ref=output_ref, ran_s=ran_s
        )
        await self._publish(TASK_COMPLETED, dispatched, "completed", data, trace)

    async def failed(
        self,
        dispatched: TaskDispatched,
        error: ErrorInfo,
        trace: str | None,
        ran_s: float | None = None,
    ) -> None:
        data = TaskFailed(**self._attempt(dispatched), error=error, ran_s=ran_s)
        await self._publish(TASK_FAILED, dispatched, "failed", data, trace)

    def _attempt(self, dispatched: TaskDispatched) -> dict[str, Any]:
        """Which attempt, and who speaks of it: what every one of these events carries."""
        return {
            "run_id": dispatched.run_id,
            "node_id": dispatched.node_id,
            "attempt": dispatched.attempt,
            "worker": self.worker,
        }

    async def _publish(
        self,
        event_type: str,
        dispatched: TaskDispatched,
        verb: str,
        data: WireModel,
        trace: str | None,
    ) -> None:
        """Durably, retrying while JetStream is briefly away (electing a stream leader takes
        seconds): the work is done, and handing the message back would run it again — alone, in
        a child process, as a suspect — and count a delivery against it as if it had killed its
        worker. The message stays ours meanwhile (heartbeats go on); after `retry_s` the error
        propagates and the message is handed back."""
        event = self._event(event_type, dispatched, verb, data, trace)
        subject = self.bus.topology.event_subject(event_type, dispatched.run_id)
        deadline = time.monotonic() + self.retry_s
        pause = 0.1
        while True:
            try:
                await self.bus.publish(subject, event)
                return
            except BusClosed:
                raise
            except BusUnavailable:
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)

    def _event(
        self,
        event_type: str,
        dispatched: TaskDispatched,
        verb: str,
        data: WireModel,
        trace: str | None,
    ) -> CloudEvent:
        extensions = {"runid": dispatched.run_id}
        if trace:
            extensions["traceparent"] = trace
        return CloudEvent.create(
            event_type,
            f"conveyor/worker/{self.worker}",
            data,
            id=f"{dispatched.run_id}:{dispatched.node_id}:{dispatched.attempt}:{verb}",
            extensions=extensions,
        )


START_DEFER_S = 0.1


class DeferredStart:
    """task.started for one attempt: only for an attempt still running `defer_s` after it
    really started (a child process first loads the task, which must not count). A shorter one
    folds its start into its result (`ran_s`): the orchestrator then applies one event, one
    commit, per task instead of two, and nothing a person could have watched is lost — a task
    shows as running only once it has run for a noticeable time. When it is sent, it is sent
    without waiting for its ack; `finish()` waits for that ack before the result is published,
    so the start comes first in the event log."""

    def __init__(
        self,
        reporter: Reporter,
        dispatched: TaskDispatched,
        trace: str | None,
        defer_s: float,
    ) -> None:
        self._reporter = reporter
        self._dispatched = dispatched
        self._trace = trace
        self._defer_s = defer_s
        self._began: float | None = None
        # A timer, not a sleeping task: most attempts end before it fires, and cancelling a
        # timer handle costs nothing, where a task per attempt cost its creation, a loop turn
        # and its cancellation (~2% of a no-op task).
        self._timer: asyncio.TimerHandle | None = None
        self._later: asyncio.Task[Callable[[], Awaitable[bool]]] | None = None

    async def __call__(self) -> None:
        """The attempt starts now."""
        if self._began is None:
            self._began = time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(self._defer_s, self._send)

    def _send(self) -> None:
        # From here on, let it finish: it may already be on the wire.
        self._later = asyncio.create_task(self._reporter.started(self._dispatched, self._trace))

    async def finish(self) -> float | None:
        """The attempt ended: how long it ran when its start was folded into the result (None
        when task.started was sent, acked first, or when it never started)."""
        timer, self._timer = self._timer, None
        later, self._later = self._later, None
        if timer is None or self._began is None:
            return None
        if later is None:
            timer.cancel()
            return round(time.monotonic() - self._began, 6)
        with contextlib.suppress(BusError):  # a lost start changes nothing that matters
            acked = await later
            await acked()
        return None
