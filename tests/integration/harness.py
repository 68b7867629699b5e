"""Conveyor's components on a real nats-server, for integration tests.

In-process orchestrator and workers (each with its own NATS connection), or real `conveyor`
processes where a test needs to kill -9 one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from events import EmbeddedServer, Topology
from events.settings import NatsSettings
from orchestrator import Workflow, roles
from orchestrator.client import Client
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.store import Store
from orchestrator.runtime.supervisor import Supervisor
from orchestrator.triggers.router import Router
from orchestrator.triggers.scheduler import Scheduler
from tests.processes import process_logs, stop_processes
from workers import Task, Worker

FLOWS = str(Path(__file__).with_name("flows.py"))


class Harness:
    """Processes built by the composition root (`orchestrator.roles`), as users run them, each
    under its own supervisor (no signal handling: the test is in charge)."""

    def __init__(self, server: EmbeddedServer, topology: Topology, workdir: Path) -> None:
        self.server = server
        self.topology = topology
        self.workdir = workdir
        self.db = workdir / "conveyor.db"
        self.engine: Engine | None = None
        self.workers: list[Worker] = []  # started in-process, in order
        self._served: list[tuple[roles.Process, Supervisor, asyncio.Task[int]]] = []
        self._by_component: dict[int, int] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.client: Client

    def common(self, metrics_port: int | None = None) -> roles.Common:
        return roles.Common(
            nats=NatsSettings(servers=(self.server.url,)),
            topology=self.topology,
            metrics_port=metrics_port,
        )

    async def open(self) -> Harness:
        os.environ["CONVEYOR_TEST_DIR"] = str(self.workdir)
        self.client = await Client.connect(self.server.url, self.topology)
        await self.client.bus.apply_topology()  # what `conveyor topology apply` does
        return self

    @contextlib.asynccontextmanager
    async def _process(self, metrics_port: int | None = None) -> AsyncIterator[roles.Process]:
        """A process to build; served once built (closed again if building it failed)."""
        process = roles.Process(self.common(metrics_port), handle_signals=False)
        await process.__aenter__()
        try:
            yield process
            supervisor = process.build_supervisor()
            await supervisor.start()
        except BaseException:
            await process.__aexit__(None, None, None)
            raise
        self._served.append((process, supervisor, asyncio.create_task(supervisor.serve())))

    def _owns(self, component: object) -> None:
        self._by_component[id(component)] = len(self._served) - 1

    async def start_orchestrator(
        self, partition: int = 0, metrics_port: int | None = None, **engine_options: Any
    ) -> Engine:
        """An engine with its status API (triggers started apart: `start_router`)."""
        db = self.db if partition == 0 else self.workdir / f"conveyor-p{partition}.db"
        async with self._process(metrics_port) as process:
            engine = await roles.orchestrator(
                process,
                db=db,
                partition=partition,
                topology="check",
                triggers=False,
                **engine_options,
            )
        self._owns(engine)
        self.engine = engine
        return engine

    async def start_projection(self, db: Path) -> tuple[Engine, Store]:
        async with self._process() as process:
            projection = await roles.projection(process, db=db)
        self._owns(projection)
        return projection, projection.store

    async def start_router(self) -> Router:
        """The trigger router, on the orchestrator's store file (start the orchestrator first)."""
        assert self.engine is not None, "start the orchestrator first"
        async with self._process() as process:
            bus = await process.connect("router")
            router = Router(bus, await process.open_store(self.db))
            process.add(router)
        return router

    def scheduler(self, clock: Any) -> Scheduler:
        """A scheduler driven by `tick(now)` (not started: the test is its clock)."""
        assert self.engine is not None, "start the orchestrator first"
        return Scheduler(self.engine.bus, self.engine.store, clock=clock)

    async def stop_engine(self, engine: Engine) -> None:
        await self._stop(self._by_component[id(engine)])

    async def _stop(self, index: int) -> int:
        process, supervisor, task = self._served[index]
        supervisor.stop()
        try:
            return await asyncio.wait_for(task, timeout=60)
        finally:
            await process.__aexit__(None, None, None)

    async def start_worker(
        self, tasks: Iterable[Task[Any, Any]], metrics_port: int | None = None, **options: Any
    ) -> Worker:
        async with self._process(metrics_port) as process:
            worker = await roles.worker(process, tasks, **options)
        self._owns(worker)
        self.workers.append(worker)
        return worker

    async def stop_worker(self, worker: Worker) -> int:
        """Stop a worker's process gracefully (SIGTERM's path: drain, last heartbeat)."""
        return await self._stop(self._by_component[id(worker)])

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
            "CONVEYOR_PARTITIONS": str(self.topology.partitions),
            "CONVEYOR_TASK_ACK_WAIT": str(self.topology.task_ack_wait_s),
            "CONVEYOR_TASK_MAX_DELIVERIES": str(self.topology.task_max_deliveries),
            "CONVEYOR_WORKER_HEARTBEAT": str(self.topology.worker_heartbeat_s),
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
        return process_logs(self.workdir, 3000)

    async def close(self) -> None:
        await stop_processes(self.processes, 15)
        # All at once: each in-process component takes up to one of its polls (about a second)
        # to notice the stop, and one after the other made most tests' teardown seconds long.
        # A process that failed still closes (its error is the test's concern, not this one's).
        await asyncio.gather(
            *(self._stop(index) for index in reversed(range(len(self._served)))),
            return_exceptions=True,
        )
        self._served.clear()
        await self.client.close()


def executions(workdir: Path) -> list[str]:
    path = workdir / "executions.log"
    return path.read_text().split() if path.exists() else []
