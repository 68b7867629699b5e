"""The worker runtime: pull tasks from queues, run them, publish results, then ack.

For each delivery (at least once; deduplicated downstream by (run, node, attempt)):

    decode -> too many deliveries? -> fail it ("kills its worker"), term
           -> unknown task?        -> fail it, term
           -> publish task.started -> validate input -> run (heartbeating, with its timeout)
           -> publish task.completed | task.failed (durably, deterministic ids) -> ack

Nothing lives on the worker between tasks, so any replica can take any task and the pool can
scale to zero. On `stop()` (SIGTERM) it stops fetching, lets in-flight tasks finish within the
grace period, and naks the rest so another replica takes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog

from events.acks import Outcome
from events.bus import Bus, Delivery, settle_quietly
from events.codec import decode
from events.consuming import Fetcher
from events.dlq import park
from events.envelope import CloudEvent
from events.errors import BusClosed, BusError, MalformedEvent
from events.models import (
    INLINE_LIMIT_BYTES,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_STARTED,
    ErrorInfo,
    TaskCancelRequested,
    TaskCompleted,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
)
from workers.attempt import Executor, perform, refusal
from workers.context import TaskContext
from workers.logcapture import LogCapture
from workers.metrics import task_seconds_histogram
from workers.otel import traced
from workers.task import Task

log = structlog.get_logger("conveyor.worker")

_ANY: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Any)  # built once: ~40 µs each time


@dataclass(slots=True)
class _InFlight:
    delivery: Delivery
    trace: str | None = None  # the attempt's W3C traceparent, from the dispatch's envelope
    job: asyncio.Task[None] | None = None
    cancelled: bool = False


class Worker:
    """Serves `tasks` from their queues (or only `queues`), at most `concurrency` at a time."""

    def __init__(
        self,
        bus: Bus,
        tasks: Iterable[Task[Any, Any]],
        *,
        queues: Iterable[str] | None = None,
        concurrency: int = 16,
        name: str | None = None,
        grace_s: float = 30.0,
        capture_logs: bool = True,
    ) -> None:
        self.bus = bus
        self.topology = bus.topology
        self.tasks: dict[str, Task[Any, Any]] = {}
        for t in tasks:
            if t.declaration.external:
                continue  # served by another worker (another language): never pulled here
            if t.name in self.tasks and self.tasks[t.name].fn is not t.fn:
                raise ValueError(f"two different tasks are named {t.name!r}")
            self.tasks[t.name] = t
        wanted = set(queues) if queues else {t.queue for t in self.tasks.values()}
        self.queues = sorted(wanted)
        if not self.queues:
            raise ValueError("a worker needs at least one task or queue to serve")
        self.concurrency = concurrency
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        self.grace_s = grace_s
        self.heartbeat_s = max(0.2, self.topology.task_ack_wait_s / 3)
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._inflight: dict[tuple[str, str, int], _InFlight] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._executor = Executor(concurrency)
        self._logs = LogCapture(bus) if capture_logs else None
        self.completed = 0
        self.failed = 0
        self.task_seconds = task_seconds_histogram()
        self._fetchers: list[Fetcher] = []
        self._cancel_sub: Any = None
        self._heartbeats: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def log_lines_dropped(self) -> int:
        return self._logs.dropped if self._logs is not None else 0

    def stop(self) -> None:
        """Begin a graceful drain (safe to call from a signal handler)."""
        self._stopping.set()

    def stuck_threads(self) -> int:
        """Sync tasks still running in threads after the drain (Python cannot interrupt them)."""
        return self._executor.busy_threads

    # ---- lifecycle (start, run, stop, drain: the supervisor's protocol) ----------------------
    async def start(self) -> None:
        """Bind the queues' consumers, listen for cancellations, start heartbeating."""
        for queue in self.queues:
            puller = await self.bus.queue_puller(queue, max_ack_pending=max(1000, self.concurrency))
            self._fetchers.append(Fetcher(puller, f"worker/{queue}"))
        self._cancel_sub = await self.bus.subscribe(
            self.topology.cancel_subject_filter(), self._on_cancel
        )
        self._heartbeats = asyncio.create_task(self._heartbeat_loop())
        if self._logs is not None:
            self._logs.install()
        log.info(
            "worker started",
            worker=self.name,
            queues=self.queues,
            tasks=sorted(self.tasks),
            concurrency=self.concurrency,
        )

    async def run(self, *, burst: bool = False) -> None:
        """Take tasks until `stop()` (then `drain()` finishes what is in flight); with
        `burst=True`, return once the queues are empty and idle, drained."""
        if not self._fetchers:
            await self.start()
        async with asyncio.TaskGroup() as group:
            for fetcher, queue in zip(self._fetchers, self.queues, strict=True):
                group.create_task(self._fetch_loop(fetcher, queue, burst))
        if burst:
            await self.drain()

    async def drain(self) -> None:
        """Finish in-flight tasks within the grace period, hand the rest back, let go of
        everything `start()` took."""
        await self._drain()
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            self._heartbeats = None
        if self._cancel_sub is not None:
            with contextlib.suppress(Exception):
                await self._cancel_sub.unsubscribe()
            self._cancel_sub = None
        for fetcher in self._fetchers:
            await fetcher.close()
        self._fetchers.clear()
        self._executor.shutdown()
        if self._logs is not None:
            await self._logs.uninstall()
        log.info("worker stopped", worker=self.name, completed=self.completed, failed=self.failed)

    async def _fetch_loop(self, fetcher: Fetcher, queue: str, burst: bool) -> None:
        while await self._acquire_slot():
            # Long-poll for one task, then take what else is already there (up to the free
            # slots) with a short second fetch. A single batched long-poll shared by several
            # worker processes can hold messages it already has until its timeout (~1 s from
            # dispatch to start, bench/repro_fetch_stall.py); this shape does not.
            deliveries = await fetcher.fetch(1, timeout=1.0)
            free = self._free_slots()
            if deliveries and free > 0:
                # Keep the one already in hand whatever happens to this second fetch.
                deliveries += await fetcher.fetch(min(free, 255), timeout=0.002)
            if not deliveries:
                self._slots.release()
                if burst and not self._jobs:
                    return
                continue
            for index, delivery in enumerate(deliveries):
                if index > 0:
                    await self._slots.acquire()
                if self._stopping.is_set():
                    await delivery.settle(Outcome.SHUTDOWN)
                    self._slots.release()
                    continue
                job = asyncio.create_task(self._handle(delivery))
                self._jobs.add(job)
                job.add_done_callback(self._job_done)

    async def _acquire_slot(self) -> bool:
        """Wait for room to run one more task; False once a stop was requested."""
        if self._stopping.is_set():
            return False
        acquire = asyncio.ensure_future(self._slots.acquire())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if acquire.done() and not self._stopping.is_set():
            return True
        if acquire.done():
            self._slots.release()
        else:
            acquire.cancel()
        return False

    def _free_slots(self) -> int:
        return self._slots._value

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        self._slots.release()

    async def _drain(self) -> None:
        if not self._jobs:
            return
        log.info("draining", worker=self.name, in_flight=len(self._jobs), grace_s=self.grace_s)
        _, pending = await asyncio.wait(set(self._jobs), timeout=self.grace_s)
        for job in pending:
            job.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            for item in list(self._inflight.values()):
                await item.delivery.in_progress()

    async def _on_cancel(self, subject: str, headers: Mapping[str, str], body: bytes) -> None:
        try:
            request: TaskCancelRequested = decode(headers, body).data_as(TaskCancelRequested)
        except MalformedEvent:
            return
        item = self._inflight.get((request.run_id, request.node_id, request.attempt))
        if item is not None and item.job is not None:
            item.cancelled = True
            item.job.cancel()

    # ---- one delivery ------------------------------------------------------------------
    async def _handle(self, delivery: Delivery) -> None:
        try:
            event = decode(delivery.headers, delivery.data)
            dispatched: TaskDispatched = event.data_as(TaskDispatched)
        except MalformedEvent as exc:
            await self._park(delivery, exc.reason)
            return
        key = (dispatched.run_id, dispatched.node_id, dispatched.attempt)
        bound = log.bind(
            run_id=dispatched.run_id,
            node_id=dispatched.node_id,
            attempt=dispatched.attempt,
            task=dispatched.task,
        )
        item = _InFlight(delivery, trace=event.extensions.get("traceparent"))
        self._inflight[key] = item
        try:
            outcome = await self._execute(dispatched, delivery, item, bound)
        except asyncio.CancelledError:
            if item.cancelled:  # the orchestrator asked: the attempt no longer matters
                outcome = Outcome.DONE
                bound.info("task cancelled on request")
            else:  # we are shutting down: let another replica take it now
                outcome = Outcome.SHUTDOWN
                bound.info("task handed back (shutdown)")
        except BusError as exc:
            bound.warning("could not publish the result; it will be redelivered", error=str(exc))
            outcome = Outcome.TRANSIENT
        finally:
            self._inflight.pop(key, None)
        with contextlib.suppress(BusError):
            await delivery.settle(outcome)

    async def _execute(
        self, dispatched: TaskDispatched, delivery: Delivery, item: _InFlight, bound: Any
    ) -> Outcome:
        refused = refusal(
            dispatched,
            delivery.num_delivered,
            self.topology.task_max_deliveries,
            self.tasks,
            self.name,
        )
        if refused is not None:
            await self._publish_failure(dispatched, refused)
            bound.error("attempt refused", error_type=refused.type, error=refused.message)
            return Outcome.GAVE_UP
        task = self.tasks[dispatched.task]
        # task.started is sent without waiting for its ack: the task starts at once, and the
        # ack is awaited before the result is published (the orchestrator copes with a result
        # that arrives without a start anyway).
        started_acked = await self._publish(
            TASK_STARTED,
            dispatched,
            "started",
            TaskStarted(
                run_id=dispatched.run_id,
                node_id=dispatched.node_id,
                attempt=dispatched.attempt,
                worker=self.name,
            ),
            wait=False,
        )
        item.job = asyncio.current_task()
        started = time.monotonic()
        raw_input = dispatched.input
        if dispatched.input_ref is not None:
            raw_input = json.loads(await self.bus.get_artifact(dispatched.input_ref))
        context = TaskContext(
            dispatched.run_id,
            dispatched.node_id,
            dispatched.attempt,
            task.name,
            self.name,
            delivery.num_delivered,
            item.trace,
            self._logs,
        )
        result = await traced(
            item.trace,
            dispatched,
            self.name,
            perform(task, dispatched, raw_input, self._executor, context),
        )
        elapsed = round(time.monotonic() - started, 4)
        self.task_seconds.labels(task=task.name).observe(elapsed)
        with contextlib.suppress(BusError):  # a lost start changes nothing that matters
            await started_acked()
        if result.error is not None:
            await self._publish_failure(dispatched, result.error)
            self.failed += 1
            error = result.error
            bound.warning(
                "task failed", error_type=error.type, error=error.message, seconds=elapsed
            )
            return Outcome.DONE
        output, output_ref = result.output, None
        if len(result.encoded) > INLINE_LIMIT_BYTES:
            # Over the inline limit: the output goes by claim check (object store).
            output, output_ref = None, await self.bus.put_artifact(result.encoded)
        await self._publish(
            TASK_COMPLETED,
            dispatched,
            "completed",
            TaskCompleted(
                run_id=dispatched.run_id,
                node_id=dispatched.node_id,
                attempt=dispatched.attempt,
                worker=self.name,
                output=output,
                output_ref=output_ref,
            ),
        )
        self.completed += 1
        bound.debug("task completed", seconds=elapsed)
        return Outcome.DONE

    def _trace(self, dispatched: TaskDispatched) -> str | None:
        item = self._inflight.get((dispatched.run_id, dispatched.node_id, dispatched.attempt))
        return item.trace if item is not None else None

    async def _publish_failure(self, dispatched: TaskDispatched, error: ErrorInfo) -> None:
        await self._publish(
            TASK_FAILED,
            dispatched,
            "failed",
            TaskFailed(
                run_id=dispatched.run_id,
                node_id=dispatched.node_id,
                attempt=dispatched.attempt,
                worker=self.name,
                error=error,
            ),
        )

    async def _publish(
        self,
        event_type: str,
        dispatched: TaskDispatched,
        verb: str,
        data: Any,
        *,
        wait: bool = True,
    ) -> Any:
        # Deterministic ids: a redelivered attempt that runs again publishes the same ids, which
        # JetStream drops as duplicates (and the orchestrator would ignore anyway).
        event = CloudEvent.create(
            event_type,
            f"conveyor/worker/{self.name}",
            data,
            id=f"{dispatched.run_id}:{dispatched.node_id}:{dispatched.attempt}:{verb}",
            extensions=_extensions(dispatched.run_id, self._trace(dispatched)),
        )
        subject = self.topology.event_subject(event_type, dispatched.run_id)
        if not wait:
            return await self.bus.publish_pipelined(subject, event)
        await self.bus.publish(subject, event)
        return None

    async def _park(self, delivery: Delivery, reason: str) -> None:
        try:
            await park(self.bus, delivery, "worker", reason)
        except BusClosed:
            raise
        except BusError:
            await settle_quietly(delivery, Outcome.TRANSIENT)
            return
        await settle_quietly(delivery, Outcome.PARKED)


def _extensions(run_id: str, trace: str | None) -> dict[str, str]:
    return {"runid": run_id, "traceparent": trace} if trace else {"runid": run_id}
