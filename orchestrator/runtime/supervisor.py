"""Every long-running part of a Conveyor process, supervised the same way.

A component (the engine, a projection, the router, the notifier, the scheduler, the NATS API
service, the HTTP server, a worker, the connection watch) has one lifecycle:

    start()   open what it needs (consumers, subscriptions, a port); raising fails start-up
    run()     do its work until stop() is called; returning or raising before that is a failure
    stop()    ask it to stop taking new work (synchronous: safe from a signal handler)
    drain()   finish or hand back what it holds, within its grace period, and release it

`Supervisor.serve` starts the components in order, runs them together under one
`asyncio.TaskGroup`, and stops them all — in reverse order, then drains them — on a signal, when
asked, or as soon as one of them ends unexpectedly; that one is logged with what ended it, and
the process exits with a non-zero status so that its own supervisor (systemd, Kubernetes,
compose) starts a fresh one. A process never runs on half-alive: a router that died of a full
disk takes its process down with it rather than leaving an orchestrator without triggers.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import structlog

from events.bus import Bus

log = structlog.get_logger("conveyor.supervisor")

EXIT_OK = 0
EXIT_FAILED = 1


@runtime_checkable
class Component(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def drain(self) -> None: ...


class StartupFailed(Exception):
    """A component could not start; the ones started before it were drained."""

    def __init__(self, component: str, cause: BaseException) -> None:
        self.component = component
        self.cause = cause
        super().__init__(f"{component} could not start: {cause}")


class Supervisor:
    def __init__(
        self,
        components: Sequence[Component],
        *,
        stop_timeout_s: float = 40.0,
        handle_signals: bool = True,
    ) -> None:
        self.components = list(components)
        self.stop_timeout_s = stop_timeout_s
        self.handle_signals = handle_signals
        self.failures: list[str] = []
        self._stopping = asyncio.Event()
        self._started: list[Component] = []
        self._signals = False

    def stop(self) -> None:
        """Ask every component to stop (safe to call from a signal handler, more than once)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for component in reversed(self._started):
            try:
                component.stop()
            except Exception:  # one component's stop must not keep the others running
                log.exception("stop failed", component=component.name)

    @property
    def healthy(self) -> bool:
        return not self.failures and not self._stopping.is_set()

    async def start(self) -> None:
        """Start every component in order; on a failure, drain the started ones and raise
        StartupFailed (nothing is left half-open). Signals are handled from here on: a SIGTERM
        while a component starts (a worker already heartbeats) stops the process cleanly."""
        self._handle_signals()
        for component in self.components:
            try:
                await component.start()
            except BaseException as exc:
                self._stopping.set()
                await self._drain()
                self._ignore_signals()
                raise StartupFailed(component.name, exc) from exc
            self._started.append(component)
            if self._stopping.is_set():  # a signal came during start-up: this one stops too
                component.stop()

    def _handle_signals(self) -> None:
        if self.handle_signals and not self._signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
            self._signals = True

    def _ignore_signals(self) -> None:
        if self._signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self._signals = False

    async def serve(self) -> int:
        """Start (unless started), run until stopped or until a component fails, drain; the exit
        status: 0 after a requested stop, 1 when a component failed."""
        if not self._started:
            await self.start()
        self._handle_signals()
        try:
            async with asyncio.TaskGroup() as group:
                runs = [group.create_task(self._supervise(c), name=c.name) for c in self._started]
                group.create_task(self._watchdog(runs))
        finally:
            self._ignore_signals()
            await self._drain()
        return EXIT_FAILED if self.failures else EXIT_OK

    async def _supervise(self, component: Component) -> None:
        try:
            await component.run()
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
            log.warning("stopped by force after the stop timeout", component=component.name)
            return
        except Exception as exc:
            self._fail(component, f"{type(exc).__name__}: {exc}", exc)
            return
        if not self._stopping.is_set():
            self._fail(component, "it returned while it should have kept running", None)

    def _fail(self, component: Component, why: str, exc: BaseException | None) -> None:
        self.failures.append(f"{component.name}: {why}")
        log.error(
            "component ended unexpectedly; stopping the process",
            component=component.name,
            error=why,
            exc_info=exc,
        )
        self.stop()

    async def _watchdog(self, runs: list[asyncio.Task[None]]) -> None:
        """Once a stop is asked for, give the components `stop_timeout_s` to return, then cancel
        what is left (its unacked messages are redelivered elsewhere)."""
        await self._stopping.wait()
        _, late = await asyncio.wait(runs, timeout=self.stop_timeout_s)
        for task in late:
            task.cancel()

    async def _drain(self) -> None:
        for component in reversed(self._started):
            try:
                await asyncio.wait_for(component.drain(), self.stop_timeout_s)
            except Exception as exc:
                log.warning("drain failed", component=component.name, error=str(exc))
        self._started.clear()


class ConnectionWatch:
    """A component that fails when a NATS connection is closed for good (BusClosed), so the
    process ends instead of lingering connected to nothing."""

    def __init__(self, bus: Bus, name: str = "nats-connection") -> None:
        self.bus = bus
        self.name = name
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        closed = asyncio.ensure_future(self.bus.wait_closed())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not closed.done():
                closed.cancel()
        if closed.done() and not closed.cancelled():
            closed.result()  # raises BusClosed when the server or client closed it for good

    def stop(self) -> None:
        self._stopped.set()

    async def drain(self) -> None:
        pass  # the connection itself is closed by whoever opened it (the role's exit stack)
