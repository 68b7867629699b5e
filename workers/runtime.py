"""The worker runtime: pull the tasks it serves, run them, publish results, then ack.

Each task is dispatched on its own subject (`<ns>.task.<queue>.<task>`) and read through its own
durable consumer (`task:<queue>:<task>`), shared by every worker that serves it; a worker binds
one consumer per (queue, task) it serves, and its fetch loops share its concurrency. So a
worker only ever receives tasks it serves, whatever else runs on its queues.

For each delivery (at least once; deduplicated downstream by (run, node, attempt)):

    decode -> too many deliveries? -> fail it (WorkerLost), term
           -> unknown task?        -> fail it, term
           -> publish task.started -> run it: shared on the first delivery, alone after that
              (workers.isolation), heartbeating, within its timeout
           -> publish task.completed | task.failed (durably, deterministic ids) -> ack
              (or, if it killed the process it ran alone in: hand it back, or WorkerLost once
              its deliveries are used up)

Nothing lives on the worker between tasks, so any replica can take any task and the pool can
scale to zero. The worker announces itself (`workers.presence`) so that a task no running worker
serves can be reported as such. On `stop()` (SIGTERM) it stops fetching, lets in-flight tasks
finish within the grace period, and naks the rest so another replica takes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from events.acks import Outcome
from events.bus import Bus, Delivery
from events.codec import decode
from events.consuming import Fetcher
from events.errors import BusError, MalformedEvent
from events.ids import is_token
from events.models import ErrorInfo, TaskCancelRequested, TaskDispatched
from workers.attempt import Executor, Result, claimed_input, died_alone, perform, refusal
from workers.context import TaskContext
from workers.forwarding import LegacyForwarder, park_and_settle
from workers.isolation import Died, Solo, address_of, run_in_child
from workers.logcapture import LogCapture
from workers.metrics import task_seconds_histogram
from workers.otel import attempt_tracer, traced
from workers.presence import Load, Presence
from workers.reporting import START_DEFER_S, DeferredStart, Reporter
from workers.task import Task

log = structlog.get_logger("conveyor.worker")
R = TypeVar("R")


@dataclass(slots=True)
class _InFlight:
    delivery: Delivery
    trace: str | None = None  # the attempt's W3C traceparent, from the dispatch's envelope
    job: asyncio.Task[None] | None = None
    cancelled: bool = False
    alone: bool = False  # run alone: a suspect (delivered before without a result)


def default_name() -> str:
    """`<host>-<pid>-<4 hex>`, a subject token (a host name may hold dots)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:80] or "host"
    return f"{host}-{os.getpid()}-{os.urandom(2).hex()}"


class Worker:
    """Serves `tasks`, each on its own queue (or every one of them on each of `queues`), at most
    `concurrency` at a time."""

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
        if not self.tasks:
            raise ValueError("a worker needs at least one task to serve")
        wanted = sorted(set(queues)) if queues else None
        # (queue, task) pairs: each task on its declared queue, or on each queue asked for.
        self.serves = sorted(
            (queue, name)
            for name, t in self.tasks.items()
            for queue in (wanted if wanted is not None else [t.queue])
        )
        for queue, task_name in self.serves:
            self.topology.task_consumer(queue, task_name)  # ValueError for an unsafe name
        self.queues = sorted({queue for queue, _ in self.serves})
        self.concurrency = concurrency
        self.name = name or default_name()
        if not is_token(self.name):
            raise ValueError(
                f"worker name {self.name!r} must hold only letters, digits, '_' or '-' (it "
                "names the worker's heartbeat subject)"
            )
        self.grace_s = grace_s
        self.progress_s = max(0.2, self.topology.task_ack_wait_s / 3)
        # A task still running after this long says so (task.started); a shorter one folds
        # its start into its result. Short enough that a person watching sees it run.
        self.start_defer_s = START_DEFER_S
        # One long-poll per consumer, each holding a slot while it waits: with more consumers
        # than slots they take turns, so keep each turn short.
        self.poll_s = (
            1.0 if len(self.serves) <= concurrency else max(0.2, concurrency / len(self.serves))
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._inflight: dict[tuple[str, str, int], _InFlight] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._executor = Executor(concurrency)
        self._solo = Solo()
        self._logs = LogCapture(bus) if capture_logs else None
        # A finished attempt keeps trying to publish its result through a leader election.
        self._reporter = Reporter(bus, self.name, retry_s=max(30.0, self.topology.task_ack_wait_s))
        self.presence = Presence(bus, self.name, self.serves, concurrency, self._load)
        self.completed = 0
        self.failed = 0
        self.task_seconds = task_seconds_histogram()
        self._fetchers: list[Fetcher] = []
        self._forwarders: list[LegacyForwarder] = []
        self._cancel_sub: Any = None
        self._progress: asyncio.Task[None] | None = None
        self._tracer: Any = None  # the attempts' OpenTelemetry tracer, chosen by start()

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

    def _load(self) -> Load:
        alone = sum(1 for item in self._inflight.values() if item.alone)
        return Load(in_flight=len(self._inflight), isolated=alone)

    # ---- lifecycle (start, run, stop, drain: the supervisor's protocol) ----------------------
    async def start(self) -> None:
        """Bind the tasks' consumers (and what is left of the old per-queue ones), listen for
        cancellations, announce the worker, start heartbeating."""
        self._tracer = attempt_tracer()  # once: None (no span, no cost) without OpenTelemetry
        pending = max(1000, self.concurrency)
        for queue, task_name in self.serves:
            puller = await self.bus.task_puller(queue, task_name, max_ack_pending=pending)
            self._fetchers.append(Fetcher(puller, f"worker/{queue}/{task_name}"))
        for queue in self.queues:
            legacy = await self.bus.legacy_queue_puller(queue)
            if legacy is not None:
                fetcher = Fetcher(legacy, f"worker/{queue} (before per-task routing)")
                self._forwarders.append(LegacyForwarder(self.bus, queue, fetcher))
        self._cancel_sub = await self.bus.subscribe(
            self.topology.cancel_subject_filter(), self._on_cancel
        )
        self._progress = asyncio.create_task(self._progress_loop())
        if self._logs is not None:
            self._logs.install()
        await self.presence.start()
        log.info(
            "worker started",
            worker=self.name,
            serves=[f"{queue}/{task_name}" for queue, task_name in self.serves],
            concurrency=self.concurrency,
        )

    async def run(self, *, burst: bool = False) -> None:
        """Take tasks until `stop()` (then `drain()` finishes what is in flight); with
        `burst=True`, return once the queues are empty and idle, drained."""
        if not self._fetchers:
            await self.start()
        async with asyncio.TaskGroup() as group:
            for fetcher in self._fetchers:
                group.create_task(self._fetch_loop(fetcher, burst))
            for forwarder in self._forwarders:
                group.create_task(forwarder.run(self._stopping, burst=burst))
        if burst:
            await self.drain()

    async def drain(self) -> None:
        """Finish in-flight tasks within the grace period, hand the rest back, let go of
        everything `start()` took."""
        await self.presence.announce("draining")
        await self._drain()
        if self._progress is not None:
            self._progress.cancel()
            self._progress = None
        if self._cancel_sub is not None:
            with contextlib.suppress(Exception):
                await self._cancel_sub.unsubscribe()
            self._cancel_sub = None
        for fetcher in self._fetchers:
            await fetcher.close()
        self._fetchers.clear()
        for forwarder in self._forwarders:
            await forwarder.close()
        self._forwarders.clear()
        self._executor.shutdown()
        if self._logs is not None:
            await self._logs.uninstall()
        await self.presence.stop()
        log.info("worker stopped", worker=self.name, completed=self.completed, failed=self.failed)

    async def _fetch_loop(self, fetcher: Fetcher, burst: bool) -> None:
        while await self._acquire_slot():
            # Long-poll for one task, then take what else is already there (up to the free
            # slots) with a short second fetch. A single batched long-poll shared by several
            # worker processes can hold messages it already has until its timeout (~1 s from
            # dispatch to start, bench/repro_fetch_stall.py); this shape does not. The second
            # fetch happens only when the first message says more are waiting: a batched fetch
            # that finds fewer than it asked for waits out its whole expiry (at least 10 ms),
            # which every task of a chain used to pay before it started.
            deliveries = await fetcher.fetch(1, timeout=self.poll_s)
            free = self._free_slots()
            waiting = deliveries[0].num_pending if deliveries else 0
            if waiting > 0 and free > 0:
                # Keep the one already in hand whatever happens to this second fetch.
                deliveries += await fetcher.fetch(min(free, waiting, 255), timeout=0.002)
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
        if not self._slots.locked():
            # A free slot is taken without waiting (no yield): no two tasks and a wait per
            # fetch, which is every task's cost while the worker has room.
            await self._slots.acquire()
            return True
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

    async def _progress_loop(self) -> None:
        """Tell JetStream the attempts in flight are alive (resets their ack wait)."""
        while True:
            await asyncio.sleep(self.progress_s)
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
            await park_and_settle(self.bus, delivery, exc.reason)
            return
        key = (dispatched.run_id, dispatched.node_id, dispatched.attempt)
        bound = log.bind(
            run_id=dispatched.run_id,
            node_id=dispatched.node_id,
            attempt=dispatched.attempt,
            task=dispatched.task,
            delivery=delivery.num_delivered,
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
        except Exception:  # a defect of ours, not the task's (its errors are reported)
            # Said once, with its traceback, and the delivery comes back later: the attempt is
            # not lost, and after CONVEYOR_TASK_MAX_DELIVERIES it is failed with a clear reason.
            bound.exception("could not handle the delivery; it will be redelivered")
            outcome = Outcome.TRANSIENT
        finally:
            self._inflight.pop(key, None)
        with contextlib.suppress(BusError):
            await delivery.settle(outcome)

    async def _execute(
        self, dispatched: TaskDispatched, delivery: Delivery, item: _InFlight, bound: Any
    ) -> Outcome:
        limit = self.topology.task_max_deliveries
        refused = refusal(dispatched, delivery.num_delivered, limit, self.tasks, self.name)
        if refused is not None:
            return await self._refuse(dispatched, refused, item, bound)
        raw_input = await claimed_input(self.bus, dispatched)
        if isinstance(raw_input, ErrorInfo):
            return await self._refuse(dispatched, raw_input, item, bound)
        task = self.tasks[dispatched.task]
        item.job = asyncio.current_task()
        item.alone = delivery.num_delivered > 1
        start = DeferredStart(self._reporter, dispatched, item.trace, self.start_defer_s)
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
        started = time.monotonic()
        if item.alone:
            bound.info("running alone: its previous delivery ended without a result")
            result = await self._spanned(
                item, dispatched, self._run_alone(task, dispatched, raw_input, context, start)
            )
        else:
            await start()
            async with self._solo.shared():
                result = await self._spanned(
                    item, dispatched, perform(task, dispatched, raw_input, self._executor, context)
                )
        elapsed = round(time.monotonic() - started, 4)
        self.task_seconds.labels(task=task.name).observe(elapsed)
        ran_s = await start.finish()
        if isinstance(result, Died):
            return await self._died(dispatched, delivery.num_delivered, result, item, bound)
        return await self._report(dispatched, result, elapsed, ran_s, item, bound)

    async def _spanned(
        self, item: _InFlight, dispatched: TaskDispatched, attempt: Awaitable[R]
    ) -> R:
        """The attempt, inside its OpenTelemetry span when there is a tracer and a trace."""
        if self._tracer is None or item.trace is None:
            return await attempt
        return await traced(self._tracer, item.trace, dispatched, self.name, attempt)

    async def _refuse(
        self, dispatched: TaskDispatched, error: ErrorInfo, item: _InFlight, bound: Any
    ) -> Outcome:
        await self._reporter.failed(dispatched, error, item.trace)
        bound.error("attempt refused", error_type=error.type, error=error.message)
        return Outcome.GAVE_UP

    async def _run_alone(
        self,
        task: Task[Any, Any],
        dispatched: TaskDispatched,
        raw_input: Any,
        context: TaskContext,
        start: DeferredStart,
    ) -> Result | Died:
        """In a child process; in this one with nothing else running if a child cannot."""
        address = address_of(task)
        if address is not None:
            logs = self._logs

            def on_log(level: str, message: str, logger: str | None) -> None:
                if logs is not None:
                    logs.emit(context, level, message, logger)

            try:
                outcome = await run_in_child(
                    address,
                    dispatched,
                    raw_input,
                    context,
                    on_log if logs is not None else None,
                    on_start=start,
                )
            except OSError as exc:  # no process to be had (out of pids, of memory...)
                log.warning("cannot start a child process", task=task.name, error=str(exc))
                outcome = None
            if outcome is not None:
                return outcome
        async with self._solo.alone():
            await start()
            return await perform(task, dispatched, raw_input, self._executor, context)

    async def _died(
        self, dispatched: TaskDispatched, deliveries: int, died: Died, item: _InFlight, bound: Any
    ) -> Outcome:
        """The attempt killed the process it ran alone in: it comes back to run alone again,
        until its deliveries are used up."""
        if deliveries >= self.topology.task_max_deliveries:
            error = died_alone(dispatched, deliveries, died.describe())
            await self._reporter.failed(dispatched, error, item.trace)
            self.failed += 1
            bound.error("task keeps killing its process; attempt failed", error=error.message)
            return Outcome.GAVE_UP
        bound.warning("task killed the process it ran alone in; handed back", ended=died.describe())
        return Outcome.TRANSIENT  # redelivered after a pause, to run alone again

    async def _report(
        self,
        dispatched: TaskDispatched,
        result: Result,
        elapsed: float,
        ran_s: float | None,
        item: _InFlight,
        bound: Any,
    ) -> Outcome:
        if result.error is not None:
            await self._reporter.failed(dispatched, result.error, item.trace, ran_s)
            self.failed += 1
            error = result.error
            bound.warning(
                "task failed", error_type=error.type, error=error.message, seconds=elapsed
            )
            return Outcome.DONE
        await self._reporter.completed(dispatched, result.output, result.encoded, item.trace, ran_s)
        self.completed += 1
        bound.debug("task completed", seconds=elapsed)
        return Outcome.DONE
