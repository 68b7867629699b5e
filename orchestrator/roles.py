"""The composition root: every process role Conveyor runs, built in one place.

The CLI, the test harness and the benchmarks all build their processes here, so what is tested
and measured is what users run. A role is a `Process` — the resources it stands on (NATS
connections, sqlite stores, an embedded nats-server), opened in order and closed in reverse on
the way out whatever happens — plus the components a `Supervisor` runs:

    orchestrator   engine, status API, trigger router, notifier, scheduler (partition 0),
                   gauges; /metrics and /healthz with --metrics-port
    leased_orchestrator
                   lease mode: the same per partition, for whichever partitions this replica
                   holds a lease on (runtime.ownership)
    worker         the worker runtime for a module's tasks; /metrics and /healthz likewise
    api            a read-side projection and the HTTP API + dashboard over it
    projection     the projection alone
    gateway        the webhook gateway
    dev            an embedded nats-server and all of the above in one process

Every process also runs a `ConnectionWatch` per NATS connection: a connection closed for good
ends the process (non-zero), so nothing lingers half-alive. A start-up that fails (NATS
unreachable, no JetStream, the topology missing past the start-up deadline, a store that cannot
be opened, a port in use) closes what was opened and raises, and the CLI exits non-zero.

This is the only orchestrator module besides the CLI that may import the worker runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import structlog

from events.bus import Bus
from events.config import environment, value_of
from events.settings import NatsSettings
from events.topology import Topology
from orchestrator.runtime.store import Store
from orchestrator.runtime.supervisor import Component, ConnectionWatch, Supervisor

if TYPE_CHECKING:
    from fastapi import FastAPI

    from events.server import EmbeddedServer
    from orchestrator.client import Client
    from orchestrator.runtime.engine import Engine
    from orchestrator.runtime.otel import RunTracing
    from orchestrator.runtime.owned import PartitionParts
    from orchestrator.runtime.ownership import Ownership
    from workers.runtime import Worker

log = structlog.get_logger("conveyor.process")
API_UNAVAILABLE_WAIT_S = 10.0  # how long an HTTP request rides out an election (see `api`)
TopologyMode = Literal["apply", "check", "auto"]


@dataclass(frozen=True, slots=True)
class Common:
    """What every role needs: where NATS is, the topology, how long to wait at start-up."""

    nats: NatsSettings = field(default_factory=NatsSettings)
    topology: Topology = field(default_factory=Topology)
    startup_timeout_s: float = 30.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, **overrides: Any) -> Common:
        """From the environment over the configuration file (events.config); `overrides`
        (flags) win where they are not None."""
        env = environment()
        values: dict[str, Any] = {
            "nats": NatsSettings.from_env(env),
            "topology": Topology.from_env(env=env),
            "startup_timeout_s": value_of("startup_timeout", env),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class Process:
    """One process: its resources (closed in reverse order on exit) and its components."""

    def __init__(self, common: Common, *, handle_signals: bool = True) -> None:
        self.common = common
        self.handle_signals = handle_signals
        self.components: list[Component] = []
        self.metrics: list[Any] = []  # prometheus registries of the components that have one
        self.supervisor: Supervisor | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Process:
        await self._stack.__aenter__()
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._stack.__aexit__(et, ev, tb)

    # ---- resources -------------------------------------------------------------------------
    async def connect(self, name: str) -> Bus:
        """A NATS connection, watched (closed for good -> the process ends), closed on exit.
        The first connection is tried for up to the start-up deadline: a process started
        beside its NATS servers (compose, a pod restarted with its node) waits for them."""
        bus = await Bus.connect(
            self.common.nats,
            self.common.topology,
            name=name,
            connect_timeout_s=self.common.startup_timeout_s,
        )
        self._stack.push_async_callback(bus.close)
        self.components.append(ConnectionWatch(bus, f"nats:{name}"))
        return bus

    async def prepare_topology(self, bus: Bus, mode: TopologyMode = "check") -> None:
        """`apply`: create or update the streams and buckets; `check`: wait until they exist
        (up to the start-up deadline); `auto`: apply on a single server (replicas 1), check on
        a cluster, where `conveyor topology apply` runs once as a job."""
        if mode == "auto":
            mode = "apply" if self.common.topology.replicas == 1 else "check"
        if mode == "apply":
            changed = await bus.apply_topology(self.common.startup_timeout_s)
            if changed:
                log.info("topology applied", changed=changed)
        else:
            await bus.check_topology(self.common.startup_timeout_s)

    async def open_store(self, path: str | Path) -> Store:
        store = await Store.open(path)
        self._stack.push_async_callback(store.close)
        return store

    def on_exit(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._stack.push_async_callback(callback)

    def add(self, *components: Component) -> None:
        self.components.extend(components)

    # ---- running ---------------------------------------------------------------------------
    def build_supervisor(self) -> Supervisor:
        if self.common.metrics_port is not None and self.metrics:
            from orchestrator.runtime.health import HealthServer

            registry = _merged(self.metrics)
            self.components.append(
                HealthServer(
                    registry,
                    lambda: self.supervisor is not None and self.supervisor.healthy,
                    self.common.metrics_port,
                    self.common.metrics_host,
                )
            )
        self.supervisor = Supervisor(self.components, handle_signals=self.handle_signals)
        return self.supervisor

    async def serve(self, on_ready: Callable[[], None] | None = None) -> int:
        """Start every component, say so, run until a signal or a failure; the exit status."""
        supervisor = self.build_supervisor()
        await supervisor.start()
        if on_ready is not None:
            on_ready()
        return await supervisor.serve()


def _merged(registries: Iterable[Any]) -> Any:
    from prometheus_client import CollectorRegistry

    merged = CollectorRegistry(auto_describe=True)
    for registry in registries:
        merged.register(_Forward(registry))
    return merged


class _Forward:
    """A collector that reports what another registry holds (one /metrics for several)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Any:
        return self.registry.collect()


# ---- the roles -------------------------------------------------------------------------------


async def orchestrator(
    process: Process,
    *,
    db: str | Path,
    partition: int = 0,
    topology: TopologyMode = "auto",
    triggers: bool = True,
    **engine_options: Any,
) -> Engine:
    """Static mode: the engine of one partition with its status API, trigger router, notifier
    and (on partition 0) cron scheduler, and a gauge refresher, on a store of its own."""
    from orchestrator.runtime.metrics import engine_registry

    bus = await process.connect(f"orchestrator-p{partition}")
    await process.prepare_topology(bus, topology)
    store = await process.open_store(db)
    tracing = _engine_tracing(process, bus)
    parts = partition_parts(
        bus, store, partition, triggers=triggers, tracing=tracing, **engine_options
    )
    process.add(*parts.serving, *parts.after_catch_up)
    process.metrics.append(engine_registry(parts.engine))
    return parts.engine


def _engine_tracing(process: Process, bus: Bus) -> RunTracing | None:
    """The engines' spans over OTLP when an endpoint is set (one exporter per process, shared
    by its partitions' engines), flushed on the way out; None otherwise."""
    from orchestrator.runtime.otel import engine_tracing

    tracing = engine_tracing(bus)
    if tracing is not None:
        process.on_exit(lambda: asyncio.to_thread(tracing.shutdown))
    return tracing


def partition_parts(
    bus: Bus, store: Store, partition: int, *, triggers: bool = True, **engine_options: Any
) -> PartitionParts:
    """One partition's components, the same in static and lease mode."""
    from orchestrator.runtime.engine import Engine
    from orchestrator.runtime.owned import PartitionParts
    from orchestrator.runtime.service import ApiService
    from orchestrator.triggers.router import Router
    from orchestrator.triggers.scheduler import Scheduler
    from orchestrator.triggers.webhooks.notifier import Notifier

    engine = Engine(bus, store, partition=partition, **engine_options)
    serving: list[Component] = [
        engine,
        ApiService(bus, store, partition),
        Periodic(f"gauges-p{partition}", engine.refresh_gauges, 5.0),
    ]
    later: list[Component] = []
    if triggers:
        later += [Router(bus, store, partition=partition), Notifier(bus, partition=partition)]
        if partition == 0:
            later.append(Scheduler(bus, store))
    return PartitionParts(engine, serving, later)


async def leased_orchestrator(
    process: Process,
    *,
    state_dir: str | Path | None = None,
    lease_s: float = 5.0,
    snapshot_interval_s: float = 30.0,
    rejoin_timeout_s: float = 30.0,
    topology: TopologyMode = "auto",
    triggers: bool = True,
    replica: str | None = None,
    **engine_options: Any,
) -> Ownership:
    """Lease mode: one of any number of identical replicas that share the partitions through
    leases (see `runtime.ownership`). Its local stores live under `state_dir` (a cache: a
    temporary directory when not given) and are snapshotted into the object store."""
    from orchestrator.runtime.metrics import ownership_registry
    from orchestrator.runtime.ownership import LeaseSettings, Ownership

    if state_dir is None:
        state_dir = Path(tempfile.mkdtemp(prefix="conveyor-orchestrator-"))
        process.on_exit(lambda: asyncio.to_thread(shutil.rmtree, state_dir, True))
    options: dict[str, Any] = {} if replica is None else {"replica": replica}
    settings = LeaseSettings(
        Path(state_dir),
        lease_s=lease_s,
        snapshot_interval_s=snapshot_interval_s,
        rejoin_timeout_s=rejoin_timeout_s,
        **options,
    )
    bus = await process.connect("orchestrator-leases")
    await process.prepare_topology(bus, topology)
    engine_options["tracing"] = _engine_tracing(process, bus)
    common = process.common

    async def connect(name: str) -> Bus:
        return await Bus.connect(common.nats, common.topology, name=name)

    def build(partition_bus: Bus, store: Store, partition: int) -> PartitionParts:
        return partition_parts(partition_bus, store, partition, triggers=triggers, **engine_options)

    ownership = Ownership(bus, settings, connect, build)
    process.add(ownership)
    process.metrics.append(ownership_registry(ownership.metrics, ownership.engines))
    return ownership


async def projection(process: Process, *, db: str | Path, rebuild: bool = False) -> Engine:
    """A read-side projection: every partition's events, the same machine, its own store (and
    its own position in the event stream: a fresh or rebuilt store replays the stream)."""
    from orchestrator.runtime.engine import Engine

    bus = await process.connect("projection")
    await process.prepare_topology(bus, "check")
    if rebuild:
        await asyncio.to_thread(remove_sqlite, Path(db))
    store = await process.open_store(db)
    engine = Engine(bus, store, projection=True)
    process.add(engine)
    return engine


async def api(
    process: Process,
    *,
    db: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    dev: bool = False,
) -> HttpServer:
    """The HTTP API and dashboard over their own projection."""
    from orchestrator.client import Client
    from orchestrator.http import create_app

    engine = await projection(process, db=db)
    # An HTTP caller waits through a short election (2-10 s) rather than get a 503, but not
    # for as long as the CLI would: past that it is told to retry (503) while it still listens.
    client = Client(engine.bus, unavailable_wait_s=API_UNAVAILABLE_WAIT_S)
    app = create_app(store=engine.store, client=client, token=token, dev=dev)
    server = HttpServer("http-api", app, host, port)
    process.add(server)
    return server


async def gateway(
    process: Process, *, hooks: str | Path, host: str = "127.0.0.1", port: int = 8090
) -> HttpServer:
    from orchestrator.triggers.webhooks import create_gateway, load_hooks

    config = load_hooks(hooks)  # a bad hooks file fails before anything connects
    bus = await process.connect("gateway")
    await process.prepare_topology(bus, "check")
    server = HttpServer("webhook-gateway", create_gateway(bus, config), host, port)
    process.add(server)
    return server


async def worker(
    process: Process,
    tasks: Iterable[Any],
    *,
    queues: Iterable[str] | None = None,
    concurrency: int = 16,
    grace_s: float = 30.0,
    topology: TopologyMode = "check",
    **options: Any,
) -> Worker:
    from workers.metrics import worker_registry
    from workers.otel import install_tracing
    from workers.runtime import Worker

    bus = await process.connect("worker")
    await process.prepare_topology(bus, topology)
    provider = install_tracing()  # the worker's spans over OTLP, if an endpoint is set
    if provider is not None:
        process.on_exit(lambda: asyncio.to_thread(provider.shutdown))
    runtime = Worker(bus, tasks, queues=queues, concurrency=concurrency, grace_s=grace_s, **options)
    process.add(runtime)
    process.metrics.append(worker_registry(runtime))
    return runtime


async def client(
    process: Process, *, source: str | None = None, actor: str | None = None
) -> Client:
    """A client on the process's connection; `source` and `actor` say who its runs come from."""
    from orchestrator.client import SOURCE, Client

    bus = await process.connect("client")
    return Client(bus, source=source or SOURCE, actor=actor)


def embedded_server(process: Process, store_dir: Path, port: int | None) -> EmbeddedServer:
    """A nats-server child process, stopped on exit (and killed with us even on kill -9)."""
    from events.server import EmbeddedServer

    server = EmbeddedServer(store_dir=store_dir, port=port).start()
    process.on_exit(lambda: asyncio.to_thread(server.stop))
    return server


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# ---- small components --------------------------------------------------------------------------


class Periodic:
    """Call `fn` every `interval_s` (refreshing gauges, say); its failures are logged, not
    fatal: it observes, it does not serve."""

    def __init__(self, name: str, fn: Callable[[], Awaitable[None]], interval_s: float) -> None:
        self.name = name
        self.fn = fn
        self.interval_s = interval_s
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.fn()
            except Exception as exc:
                log.warning("periodic task failed", component=self.name, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.interval_s)

    def stop(self) -> None:
        self._stopped.set()

    async def drain(self) -> None:
        pass


class HttpServer:
    """An HTTP app (FastAPI) served on the process's event loop, as a component."""

    def __init__(self, name: str, app: FastAPI, host: str, port: int) -> None:
        from orchestrator.http.server import ApiServer

        self.name = name
        self.app = app
        self.server = ApiServer(app, host, port)
        self._stopped = asyncio.Event()

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()

    async def run(self) -> None:
        stopped = asyncio.ensure_future(self._stopped.wait())
        serving = asyncio.ensure_future(self.server.wait())
        try:
            await asyncio.wait({stopped, serving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if serving.done():
            serving.result()  # the server stopped on its own: raise what stopped it
        else:
            serving.cancel()

    def stop(self) -> None:
        self._stopped.set()

    async def drain(self) -> None:
        await self.server.stop()
