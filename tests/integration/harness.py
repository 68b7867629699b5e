"""Conveyor's components on a real nats-server, for integration tests.

In-process orchestrator and workers (each with its own NATS connection), or real `conveyor`
processes where a test needs to kill -9 one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from events import Bus, EmbeddedServer, Topology
from orchestrator import Workflow
from orchestrator.client import Client
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.service import ApiService
from orchestrator.runtime.store import Store
from orchestrator.triggers.router import Router
from orchestrator.triggers.scheduler import Scheduler
from workers import Task, Worker

FLOWS = str(Path(__file__).with_name("flows.py"))


class Harness:
    def __init__(self, server: EmbeddedServer, topology: Topology, workdir: Path) -> None:
        self.server = server
        self.topology = topology
        self.workdir = workdir
        self.db = workdir / "conveyor.db"
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Any] = []
        self.engine: Engine | None = None
        self._running: dict[Engine, asyncio.Task[None]] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.client: Client

    async def open(self) -> Harness:
        os.environ["CONVEYOR_TEST_DIR"] = str(self.workdir)
        self.client = await Client.connect(self.server.url, self.topology)
        self._closers.append(self.client.close)
        return self

    async def start_orchestrator(self, **engine_options: Any) -> Engine:
        bus = await Bus.connect(self.server.url, self.topology, name="test-orchestrator")
        store = await Store.open(self.db)
        engine = Engine(bus, store, **engine_options)
        await engine.start()
        api = ApiService(bus, store)
        await api.start()
        self._tasks.append(asyncio.create_task(engine.run()))
        self._closers += [store.close, bus.close, api.stop]
        self.engine = engine
        self._engine_task = self._tasks[-1]
        return engine

    async def start_projection(self, db: Path) -> tuple[Engine, Store]:
        bus = await Bus.connect(self.server.url, self.topology, name="test-projection")
        store = await Store.open(db)
        projection = Engine(bus, store, projection=True)
        await projection.start()
        self._tasks.append(asyncio.create_task(projection.run()))
        self._running[projection] = self._tasks[-1]
        self._closers += [store.close, bus.close, projection.stop]
        return projection, store

    async def start_router(self) -> Router:
        """The trigger router on the orchestrator's store (start the orchestrator first)."""
        assert self.engine is not None, "start the orchestrator first"
        router = Router(self.engine.bus, self.engine.store)
        await router.start()
        self._tasks.append(asyncio.create_task(router.run()))
        self._closers.append(router.stop)
        return router

    def scheduler(self, clock: Any) -> Scheduler:
        """A scheduler driven by `tick(now)` (not started: the test is its clock)."""
        assert self.engine is not None, "start the orchestrator first"
        return Scheduler(self.engine.bus, self.engine.store, clock=clock)

    async def stop_engine(self, engine: Engine) -> None:
        engine.stop()
        await asyncio.wait_for(self._running[engine], timeout=10)

    async def start_worker(self, tasks: Iterable[Task[Any, Any]], **options: Any) -> Worker:
        bus = await Bus.connect(self.server.url, self.topology, name="test-worker")
        worker = Worker(bus, tasks, **options)
        self._tasks.append(asyncio.create_task(worker.run()))
        self._closers.append(bus.close)
        self._closers.append(worker.stop)
        return worker

    async def register(self, *workflows: Workflow) -> None:
        registry = Registry(self.client.bus)
        await registry.register_all([wf.spec for wf in workflows])

    async def run(
        self,
        wf: Workflow,
        input: dict[str, Any] | None = None,
        timeout: float = 60.0,
        **options: Any,
    ) -> dict[str, Any]:
        run_id = await self.client.trigger(wf.name, input or {}, **options)
        try:
            return await self.client.wait(run_id, timeout=timeout)
        except TimeoutError:
            status = await self.client.status(run_id)
            raise AssertionError(
                f"run {run_id} of {wf.name} did not finish within {timeout}s: {status}"
            ) from None

    # ---- real processes ----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONVEYOR_NAMESPACE": self.topology.namespace,
            "CONVEYOR_TASK_ACK_WAIT": str(self.topology.task_ack_wait_s),
            "CONVEYOR_TASK_MAX_DELIVERIES": str(self.topology.task_max_deliveries),
            "CONVEYOR_TEST_DIR": str(self.workdir),
            "CONVEYOR_NATS_URL": self.server.url,
        }

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"proc-{len(self.processes)}.log", "wb") as log:
            # The child keeps its own copy of the descriptor; ours can close at once.
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "--log-level", "info", *args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(proc)
        return proc

    def spawn_worker(self, module: str = FLOWS, *extra: str) -> subprocess.Popen[bytes]:
        return self.spawn("worker", module, *extra)

    def spawn_orchestrator(self) -> subprocess.Popen[bytes]:
        return self.spawn("orchestrator", "--db", str(self.db))

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.workdir.glob("proc-*.log"))
        )

    async def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for closer in reversed(self._closers):
            if callable(closer) and not asyncio.iscoroutinefunction(closer):
                closer()
        if self.engine is not None:
            self.engine.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        for task in self._tasks:
            task.cancel()
        for closer in reversed(self._closers):
            if asyncio.iscoroutinefunction(closer):
                with contextlib.suppress(Exception):
                    await closer()


def executions(workdir: Path) -> list[str]:
    path = workdir / "executions.log"
    return path.read_text().split() if path.exists() else []
