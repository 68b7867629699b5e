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
import contextvars
import json
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog

from events.acks import Outcome
from events.bus import Bus, Delivery
from events.codec import decode
from events.envelope import CloudEvent
from events.errors import BusError, MalformedEvent
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
from workers.context import TaskContext, _current
from workers.errors import NonRetryableError
from workers.logcapture import LogCapture
from workers.metrics import task_seconds_histogram
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
        self._threads = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="conveyor-task"
        )
        self._logs = LogCapture(bus) if capture_logs else None
        self._sync_running = 0
        self._sync_lock = threading.Lock()
        self.completed = 0
        self.failed = 0
        self.task_seconds = task_seconds_histogram()

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
        return self._sync_running

    async def run(self, *, burst: bool = False) -> None:
        """Serve until `stop()`; with `burst=True`, return once the queues are empty and idle."""
        pullers = [
            await self.bus.queue_puller(q, max_ack_pending=max(1000, self.concurrency))
            for q in self.queues
        ]
        cancel_sub = await self.bus.subscribe(
            self.topology.cancel_subject_filter(), self._on_cancel
        )
        heartbeats = asyncio.create_task(self._heartbeat_loop())
        if self._logs is not None:
            self._logs.install()
        log.info(
            "worker started",
            worker=self.name,
            queues=self.queues,
            tasks=sorted(self.tasks),
            concurrency=self.concurrency,
        )
        try:
            await asyncio.gather(
                *(self._fetch_loop(p, q, burst) for p, q in zip(pullers, self.queues, strict=True))
            )
            await self._drain()
        finally:
            heartbeats.cancel()
            with contextlib.suppress(Exception):
                await cancel_sub.unsubscribe()
            for p in pullers:
                await p.close()
            self._threads.shutdown(wait=False, cancel_futures=True)
            if self._logs is not None:
                await self._logs.uninstall()
            log.info(
                "worker stopped", worker=self.name, completed=self.completed, failed=self.failed
            )

    async def _fetch_loop(self, puller: Any, queue: str, burst: bool) -> None:
        while await self._acquire_slot():
            # Long-poll for one task, then take what else is already there (up to the free
            # slots) with a short second fetch. A single batched long-poll shared by several
            # worker processes can hold messages it already has until its timeout (~1 s from
            # dispatch to start, bench/repro_fetch_stall.py); this shape does not.
            try:
                deliveries = await puller.fetch(1, timeout=1.0)
                free = self._free_slots()
                if deliveries and free > 0:
                    with contextlib.suppress(BusError):  # keep the one already in hand
                        deliveries += await puller.fetch(min(free, 255), timeout=0.002)
            except BusError as exc:
                self._slots.release()
                log.warning("fetch failed; retrying", queue=queue, error=str(exc))
                await asyncio.sleep(0.5)
                continue
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
        limit = self.topology.task_max_deliveries
        if delivery.num_delivered > limit:
            await self._publish_failure(
                dispatched,
                ErrorInfo(
                    type="WorkerLost",
                    message=f"task {dispatched.task!r} was delivered {delivery.num_delivered - 1} "
                    f"times and every worker that took it died or went silent before finishing "
                    f"(crash, kill -9, out of memory?); giving up on this attempt after {limit}",
                    retryable=True,
                ),
            )
            bound.error(
                "task keeps killing its workers; attempt failed", deliveries=delivery.num_delivered
            )
            return Outcome.GAVE_UP
        task = self.tasks.get(dispatched.task)
        if task is None:
            await self._publish_failure(
                dispatched,
                ErrorInfo(
                    type="UnknownTask",
                    message=f"worker {self.name} serves queue {dispatched.queue!r} but has no task "
                    f"named {dispatched.task!r} (it has: {', '.join(sorted(self.tasks))})",
                    retryable=True,
                ),
            )
            return Outcome.GAVE_UP

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
        error = None
        output_ref: str | None = None
        try:
            output = await self._call(task, dispatched, delivery)
        except asyncio.CancelledError:
            raise
        except _InvalidInput as exc:
            error = ErrorInfo(
                type="InputValidationError", message=str(exc), retryable=False, details=exc.problems
            )
        except TimeoutError:
            error = ErrorInfo(
                type="TimeoutError",
                message=f"task {task.name!r} did not finish within its "
                f"{dispatched.timeout}s timeout",
                retryable=True,
            )
        except Exception as exc:  # the task's own failure: report it, typed
            error = _error_info(exc, task)
        if error is None:
            try:
                payload = task.serialise_output(output)
                encoded = _ANY.dump_json(payload)
            except Exception as exc:
                error = ErrorInfo(
                    type="OutputSerialisationError",
                    retryable=False,
                    message=f"output of {task.name!r} cannot be serialised: {exc}",
                )
            else:
                if len(encoded) > INLINE_LIMIT_BYTES:
                    # Over the inline limit: the output goes by claim check (object store).
                    output_ref = await self.bus.put_artifact(encoded)
                    payload = None
        elapsed = round(time.monotonic() - started, 4)
        self.task_seconds.labels(task=task.name).observe(elapsed)
        with contextlib.suppress(BusError):  # a lost start changes nothing that matters
            await started_acked()
        if error is not None:
            await self._publish_failure(dispatched, error)
            self.failed += 1
            bound.warning(
                "task failed", error_type=error.type, error=error.message, seconds=elapsed
            )
            return Outcome.DONE
        await self._publish(
            TASK_COMPLETED,
            dispatched,
            "completed",
            TaskCompleted(
                run_id=dispatched.run_id,
                node_id=dispatched.node_id,
                attempt=dispatched.attempt,
                worker=self.name,
                output=payload,
                output_ref=output_ref,
            ),
        )
        self.completed += 1
        bound.debug("task completed", seconds=elapsed)
        return Outcome.DONE

    async def _call(
        self, task: Task[Any, Any], dispatched: TaskDispatched, delivery: Delivery
    ) -> Any:
        raw_input = dispatched.input
        if dispatched.input_ref is not None:
            raw_input = json.loads(await self.bus.get_artifact(dispatched.input_ref))
        try:
            kwargs = task.validate_input(raw_input)
        except pydantic.ValidationError as exc:
            raise _InvalidInput(task.name, exc) from None
        token = _current.set(
            TaskContext(
                dispatched.run_id,
                dispatched.node_id,
                dispatched.attempt,
                task.name,
                self.name,
                delivery.num_delivered,
                self._trace(dispatched),
                self._logs,
            )
        )
        try:
            if task.is_async:
                coro = task.fn(**kwargs)
            else:
                loop = asyncio.get_running_loop()
                context = contextvars.copy_context()  # so current() works in the thread too
                coro = loop.run_in_executor(
                    self._threads, lambda: context.run(self._run_sync, task.fn, kwargs)
                )
            if dispatched.timeout is None:
                return await coro
            return await asyncio.wait_for(coro, dispatched.timeout)
        finally:
            # Lines the worker itself logs about this attempt are not the task's own output.
            _current.reset(token)

    def _run_sync(self, fn: Any, kwargs: dict[str, Any]) -> Any:
        with self._sync_lock:
            self._sync_running += 1
        try:
            return fn(**kwargs)
        finally:
            with self._sync_lock:
                self._sync_running -= 1

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
        headers = dict(delivery.headers)
        headers["Conveyor-Dlq-Reason"] = reason[:500].encode("ascii", "replace").decode()
        headers["Conveyor-Dlq-Subject"] = delivery.subject
        headers.pop("Nats-Msg-Id", None)
        try:
            await self.bus.publish_raw(self.topology.dlq_subject("worker"), headers, delivery.data)
        except BusError:
            await delivery.settle(Outcome.TRANSIENT)
            return
        log.error(
            "malformed task message parked on the DLQ", reason=reason, subject=delivery.subject
        )
        await delivery.settle(Outcome.PARKED)


def _extensions(run_id: str, trace: str | None) -> dict[str, str]:
    return {"runid": run_id, "traceparent": trace} if trace else {"runid": run_id}


class _InvalidInput(Exception):
    def __init__(self, task: str, exc: pydantic.ValidationError) -> None:
        self.problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '<input>'}: {e['msg']}" for e in exc.errors()
        ]
        super().__init__(f"input of task {task!r} is invalid: " + "; ".join(self.problems))


def _error_info(exc: BaseException, task: Task[Any, Any]) -> ErrorInfo:
    name = type(exc).__name__
    non_retryable = task.declaration.defaults.get("non_retryable") or ()
    return ErrorInfo(
        type=name,
        message=str(exc) or name,
        traceback="".join(traceback.format_exception(exc)),
        retryable=not isinstance(exc, NonRetryableError) and name not in non_retryable,
    )
