"""Cron schedules: start runs of scheduled workflows when their instants come.

Each (workflow, schedule) has a cursor in the store: the last instant handled. A tick asks
`cron.to_fire` which instants to start runs for, publishes a run.requested for each — with a run
id derived from (workflow, schedule, instant), so a restart, or two schedulers, never start an
instant twice — and then moves the cursor. A new schedule starts from now (it does not fire the
past). Paused schedules (`conveyor schedules pause WF`) move their cursor without firing.

The clock is a parameter and `tick(now)` does one pass: tests drive it without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from events.bus import Bus
from events.envelope import CloudEvent
from events.errors import BusClosed, BusError
from events.ids import derived_id
from events.models import RUN_REQUESTED, RunRequested
from orchestrator.core.cron import iso, to_fire
from orchestrator.core.spec import WorkflowSpec
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.store import Store

log = structlog.get_logger("conveyor.scheduler")
SOURCE = "conveyor/scheduler"


def schedule_run_id(workflow: str, index: int, instant: float) -> str:
    return derived_id("schedule", workflow, str(index), repr(instant))


class Scheduler:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        interval_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.registry = Registry(bus)
        self.clock = clock
        self.interval_s = interval_s
        self.fired = 0
        self.name = "scheduler"
        self._stopping = asyncio.Event()

    # ---- lifecycle (runtime.supervisor.Component) -----------------------------------------
    async def start(self) -> None:
        pass

    def stop(self) -> None:
        self._stopping.set()

    async def drain(self) -> None:
        pass

    async def run(self) -> None:
        """Tick until stopped. The broker being briefly away skips a tick (the cursors make the
        next one catch up); a store that fails or a closed connection ends the scheduler, and
        with it the process, rather than leaving it running without schedules."""
        while not self._stopping.is_set():
            try:
                await self.tick(self.clock())
            except BusClosed:
                raise
            except BusError as exc:
                log.warning("scheduler tick failed; retrying", error=str(exc))
            with contextlib.suppress(TimeoutError):  # the tick interval, or a stop
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    async def tick(self, now: float) -> list[str]:
        """One pass over every schedule; returns the run ids requested."""
        started: list[str] = []
        for spec in await self.scheduled():
            paused = await self.registry.is_paused(spec.name)
            for index, schedule in enumerate(spec.schedules):
                key = f"{spec.name}#{index}"
                cursor = await self.store.schedule_cursor(key)
                if cursor is None:
                    await self.store.set_schedule_cursor(key, now)  # new: from now on
                    continue
                instants = [] if paused else to_fire(schedule, cursor, now)
                for instant in instants:
                    started.append(await self._request(spec, index, instant))
                if instants or paused:
                    await self.store.set_schedule_cursor(key, max([now, *instants]))
                elif now > cursor:
                    await self.store.set_schedule_cursor(key, now)
        return started

    async def scheduled(self) -> list[WorkflowSpec]:
        return [s for s in await self.registry.specs() if s.schedules]

    async def _request(self, spec: WorkflowSpec, index: int, instant: float) -> str:
        schedule = spec.schedules[index]
        run_id = schedule_run_id(spec.name, index, instant)
        request = RunRequested(workflow=spec.name, input=dict(schedule.input), run_id=run_id)
        event = CloudEvent.create(
            RUN_REQUESTED,
            SOURCE,
            request,
            id=f"{run_id}:requested",
            subject=iso(instant, schedule.timezone),
            # No traceparent: the run's span starts the trace (events.tracing.run_traceparent).
            extensions={"runid": run_id},
        )
        await self.bus.publish(self.bus.topology.event_subject(RUN_REQUESTED, run_id), event)
        self.fired += 1
        log.info(
            "scheduled run requested",
            workflow=spec.name,
            run_id=run_id,
            instant=iso(instant, schedule.timezone),
        )
        return run_id
