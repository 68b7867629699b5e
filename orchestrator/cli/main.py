"""`conveyor`: the command line. The composition root: the only orchestrator module that starts
workers (imported lazily, for `dev` and `worker`); the engine itself never loads user code.

Exit codes: 0 success; 1 a run failed or was cancelled; 2 bad usage, unknown workflow, invalid
input or spec; 3 NATS unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import structlog
import yaml

from events.bus import Bus
from events.errors import BusError, ConveyorError, ServerError
from events.logs import configure_logging
from events.server import EmbeddedServer
from events.topology import Topology
from orchestrator.cli.progress import Progress, summary
from orchestrator.client import Client
from orchestrator.core.rules import retry_refusal
from orchestrator.errors import InvalidInput, SpecError, UnknownWorkflow, WorkflowDefinitionError

DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_HOME = Path(".conveyor")
log = structlog.get_logger("conveyor.cli")


class UsageError(Exception):
    """Bad usage: exit code 2 with the message."""


def main(argv: list[str] | None = None) -> NoReturn:
    parser = _parser()
    args = parser.parse_args(argv)
    extra = []
    if args.handler in (cmd_worker, cmd_dev):
        from workers.logcapture import structlog_processor  # the composition root may

        extra.append(structlog_processor)
    configure_logging(json=args.log_json, level=args.log_level, extra_processors=extra)
    try:
        code = asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        code = 130
    except (UsageError, UnknownWorkflow, InvalidInput, SpecError, WorkflowDefinitionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except (FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except BusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 3
    except (ServerError, ConveyorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


# ---- commands --------------------------------------------------------------------------------


async def cmd_dev(args: argparse.Namespace) -> int:
    from orchestrator.dsl.loader import load_module

    loaded = load_module(args.module)  # fail on a bad module before starting anything
    if not loaded.workflows and not loaded.tasks:
        raise UsageError(f"{args.module} defines no @workflow and no @task")
    home = Path(args.home)
    port = args.port if args.port is not None else (None if args.run else 4222)
    input_data = _json_input(args.input) if args.run else {}
    if args.run and args.run not in loaded.workflows:
        raise UnknownWorkflow(args.run, known=list(loaded.workflows))
    server = EmbeddedServer(store_dir=home / "nats", port=port)
    await asyncio.to_thread(server.start)
    try:
        topology = Topology.from_env(args.namespace)
        async with _Components(server.url, topology, home / "conveyor.db", loaded, args) as parts:
            if not args.run:
                print(
                    f"conveyor dev: NATS at {server.url}, workflows: "
                    f"{', '.join(sorted(loaded.workflows)) or 'none'}",
                    file=sys.stderr,
                )
                if parts.dashboard is not None:
                    print(
                        f"  dashboard: {parts.dashboard.url}/  (dev mode: no token)",
                        file=sys.stderr,
                    )
                if parts.gateway is not None:
                    print(f"  webhooks: {parts.gateway.url}/hooks/<name>", file=sys.stderr)
                print(
                    f"  trigger one with: conveyor run <workflow> --nats {server.url} --wait",
                    file=sys.stderr,
                )
                await _until_signal()
                return 0
            return await _run_and_wait(
                parts.client, args.run, input_data, None, args.json, timeout=args.timeout
            )
    finally:
        await asyncio.to_thread(server.stop)


class _Components:
    """Orchestrator + API + worker (+ client) in one process, on one NATS server."""

    def __init__(self, url: str, topology: Topology, db: Path, loaded: Any, args: Any) -> None:
        self.url, self.topology, self.db, self.loaded, self.args = url, topology, db, loaded, args
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _Components:
        from orchestrator.runtime.engine import Engine
        from orchestrator.runtime.registry import Registry
        from orchestrator.runtime.service import ApiService
        from orchestrator.runtime.store import Store
        from workers.runtime import Worker

        self.engine_bus = await Bus.connect(self.url, self.topology, name="conveyor-orchestrator")
        await self.engine_bus.ensure_topology()
        self.store = await Store.open(self.db)
        registry = Registry(self.engine_bus)
        await registry.register_all([wf.spec for wf in self.loaded.workflows.values()])
        self.engine = Engine(self.engine_bus, self.store)
        await self.engine.start()
        self.api = ApiService(self.engine_bus, self.store)
        await self.api.start()
        self.tasks.append(asyncio.create_task(self.engine.run()))
        self.side = await _start_side_components(self.engine_bus, self.store, 0)
        self.tasks += [asyncio.create_task(c.run()) for c in self.side]
        self.worker: Any = None
        if self.loaded.tasks:
            self.worker_bus = await Bus.connect(self.url, self.topology, name="conveyor-worker")
            self.worker = Worker(
                self.worker_bus, self.loaded.tasks.values(), concurrency=self.args.concurrency
            )
            self.tasks.append(asyncio.create_task(self.worker.run()))
        self.client = await Client.connect(self.url, self.topology)
        self.dashboard: Any = None
        if not self.args.run or self.args.api_port is not None:
            from orchestrator.http import ApiServer, create_app

            # The dashboard reads its own projection, as `conveyor api` does in production.
            self.projection_store = await Store.open(self.db.with_name("projection.db"))
            self.projection = Engine(self.engine_bus, self.projection_store, projection=True)
            await self.projection.start()
            self.side.append(self.projection)
            self.tasks.append(asyncio.create_task(self.projection.run()))
            app = create_app(store=self.projection_store, client=self.client, dev=True)
            port = 8080 if self.args.api_port is None else self.args.api_port
            self.dashboard = await ApiServer(app, "127.0.0.1", port).start()
        self.gateway: Any = None
        if getattr(self.args, "hooks", None):
            from orchestrator.http.server import ApiServer
            from orchestrator.triggers.webhooks import create_gateway, load_hooks

            gateway_app = create_gateway(self.engine_bus, load_hooks(self.args.hooks))
            self.gateway = await ApiServer(gateway_app, "127.0.0.1", self.args.webhook_port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.worker is not None:
            self.worker.stop()
        self.engine.stop()
        for component in self.side:
            component.stop()
        await asyncio.wait(self.tasks, timeout=35)
        await self.api.stop()
        await self.client.close()
        if self.worker is not None:
            await self.worker_bus.close()
        await self.engine_bus.close()
        await self.store.close()
        if self.dashboard is not None:
            await self.projection_store.close()


async def _start_side_components(bus: Bus, store: Any, partition: int) -> list[Any]:
    """The trigger router (every partition) and the cron scheduler (partition 0 only)."""
    from orchestrator.triggers.router import Router
    from orchestrator.triggers.scheduler import Scheduler
    from orchestrator.triggers.webhooks.notifier import Notifier

    router = Router(bus, store, partition=partition)
    await router.start()
    notifier = Notifier(bus, partition=partition)
    await notifier.start()
    side: list[Any] = [router, notifier]
    return [*side, Scheduler(bus, store)] if partition == 0 else side


async def cmd_orchestrator(args: argparse.Namespace) -> int:
    from orchestrator.runtime.engine import Engine
    from orchestrator.runtime.service import ApiService
    from orchestrator.runtime.store import Store

    bus = await Bus.connect(
        args.nats, Topology.from_env(args.namespace), name="conveyor-orchestrator"
    )
    store = await Store.open(args.db)
    engine = Engine(bus, store, partition=args.partition)
    await engine.start()
    api = ApiService(bus, store, args.partition)
    await api.start()
    gauges = asyncio.create_task(_refresh_forever(engine))
    if args.metrics_port:
        from orchestrator.runtime.metrics import engine_registry, serve_metrics

        serve_metrics(engine_registry(engine), args.metrics_port, args.metrics_host)
    side = await _start_side_components(bus, store, args.partition)
    side_tasks = [asyncio.create_task(c.run()) for c in side]

    def stop() -> None:
        engine.stop()
        for component in side:
            component.stop()

    _on_signals(stop)
    print(
        f"orchestrator ready (partition {args.partition}, db {args.db})",
        file=sys.stderr,
        flush=True,
    )
    try:
        await engine.run()
        await asyncio.wait(side_tasks, timeout=10)
    finally:
        gauges.cancel()
        await api.stop()
        await bus.close()
        await store.close()
    return 0


async def _refresh_forever(engine: Any) -> None:
    while True:
        await engine.refresh_gauges()
        await asyncio.sleep(5)


async def cmd_worker(args: argparse.Namespace) -> int:
    from orchestrator.dsl.loader import load_module
    from orchestrator.runtime.registry import Registry
    from workers.runtime import Worker

    loaded = load_module(args.module)
    if not loaded.tasks:
        raise UsageError(f"{args.module} defines no @task to serve")
    bus = await Bus.connect(args.nats, Topology.from_env(args.namespace), name="conveyor-worker")
    await bus.ensure_topology()
    registry = Registry(bus)
    for spec in await registry.register_all([wf.spec for wf in loaded.workflows.values()]):
        log.info("workflow registered", workflow=spec.name, version=spec.version)
    worker = Worker(
        bus,
        loaded.tasks.values(),
        queues=args.queue or None,
        concurrency=args.concurrency,
        grace_s=args.grace,
    )
    if args.metrics_port:
        from orchestrator.runtime.metrics import serve_metrics
        from workers.metrics import worker_registry

        serve_metrics(worker_registry(worker), args.metrics_port, args.metrics_host)
    _on_signals(worker.stop)
    print(f"worker ready (queues: {', '.join(worker.queues)})", file=sys.stderr, flush=True)
    try:
        await worker.run()
    finally:
        await bus.close()
    if worker.stuck_threads():
        # A sync task outlived the grace period; its message was handed back. Python cannot
        # interrupt the thread, and waiting for it would block the exit: leave now.
        print(
            f"worker exiting with {worker.stuck_threads()} task thread(s) still busy",
            file=sys.stderr,
            flush=True,
        )
        os._exit(0)
    return 0


async def cmd_register(args: argparse.Namespace) -> int:
    from orchestrator.runtime.registry import Registry

    specs = _specs_from_file(args.file)
    async with _bus(args) as bus:
        registry = Registry(bus)
        for stored in await registry.register_all(specs):
            print(f"registered {stored.name} version {stored.version}")
    return 0


async def cmd_run(args: argparse.Namespace) -> int:
    input_data = _json_input(args.input)
    async with _client(args) as client:
        run_id = await client.trigger(
            args.workflow, input_data, idempotency_key=args.key, version=args.version
        )
        if not args.wait:
            print(json.dumps({"run_id": run_id}) if args.json else run_id)
            return 0
        return await _run_and_wait(
            client, args.workflow, input_data, run_id, args.json, timeout=args.timeout
        )


async def _run_and_wait(
    client: Client,
    workflow: str,
    input_data: dict[str, Any],
    run_id: str | None,
    as_json: bool,
    timeout: float | None,
) -> int:
    if run_id is None:
        run_id = await client.trigger(workflow, input_data)
    if not as_json:
        print(run_id, flush=True)
    return await _follow(client, workflow, run_id, as_json, timeout)


async def _follow(
    client: Client,
    workflow: str,
    run_id: str,
    as_json: bool,
    timeout: float | None,
    newer_than: float | None = None,
) -> int:
    progress = Progress(run_id, workflow)
    with progress:
        final = await client.wait(run_id, progress.update, timeout=timeout, newer_than=newer_than)
    if as_json:
        print(json.dumps(final, default=str))
    else:
        print(summary(final))
    return 0 if final["status"] == "succeeded" else 1


async def cmd_status(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        status = await _existing_run(client, args.run_id)
    if args.json:
        print(json.dumps(status, default=str))
        return 0
    print(
        f"run {status['run_id']} · {status['workflow']} v{status['version']} · {status['status']}"
    )
    for name, node in status["nodes"].items():
        from orchestrator.cli.progress import _node_text

        print(f"  {name}: {_node_text(node)}")
        if node.get("error"):
            print(f"      {node['error'].get('type')}: {node['error'].get('message')}")
    for note in status.get("notifications") or []:
        outcome = "delivered" if note["delivered"] else note.get("error") or "failed"
        print(f"  webhook {note['url']} attempt {note['attempt']}: {outcome}")
    print(summary(status).split("\n", 1)[1] if "\n" in summary(status) else "")
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await _existing_run(client, args.run_id)
        await client.cancel(args.run_id, args.reason)
    print(f"cancel requested for {args.run_id}")
    return 0


async def cmd_retry(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        status = await _existing_run(client, args.run_id)
        refusal = retry_refusal(status["status"], status.get("error"))
        if refusal is not None:
            raise UsageError(f"run {args.run_id} cannot be retried: {refusal}")
        await client.retry(args.run_id)
        if not args.wait:
            print(f"retry requested for {args.run_id}")
            return 0
        return await _follow(
            client,
            status["workflow"],
            args.run_id,
            args.json,
            args.timeout,
            newer_than=status["updated_at"],
        )


async def cmd_logs(args: argparse.Namespace) -> int:
    from events.models import LogLine

    async with _client(args) as client:
        await _existing_run(client, args.run_id)
        topo = client.topology
        subject = topo.log_subject(args.run_id, args.node or "*")
        nodes = {args.node} if args.node else None
        printed = 0

        async def show(delivery: Any) -> None:
            nonlocal printed
            try:
                line = LogLine.model_validate_json(delivery.data)
            except ValueError:
                return
            if (
                nodes is not None
                and line.node_id.split("[")[0] not in nodes
                and line.node_id not in nodes
            ):
                return
            printed += 1
            if args.json:
                print(line.model_dump_json(), flush=True)
            else:
                print(
                    f"{line.time[11:23]} {line.node_id}#{line.attempt} {line.level:<7} "
                    f"{line.message}",
                    flush=True,
                )

        if not args.follow:
            start = 1
            while True:
                page = await client.bus.read_stream(
                    topo.logs_stream, subject, start_seq=start, limit=1000
                )
                for delivery in page:
                    await show(delivery)
                if len(page) < 1000:
                    break
                start = page[-1].stream_seq + 1
            return 0

        sub = await client.bus.follow_stream(topo.logs_stream, subject, show)
        try:
            # Follow until the run ends (then give in-flight lines a moment to arrive).
            await client.wait(args.run_id)
            await client.bus.flush()
        finally:
            await sub.unsubscribe()
    return 0


async def cmd_workflows(args: argparse.Namespace) -> int:
    from orchestrator.runtime.registry import Registry

    async with _bus(args) as bus:
        registry = Registry(bus)
        rows = []
        for name in await registry.names():
            spec = (await registry.get(name)).spec
            rows.append(
                {
                    "name": name,
                    "version": spec.version,
                    "nodes": len(spec.nodes),
                    "description": spec.description.split("\n")[0],
                }
            )
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(
            f"{row['name']:<24} v{row['version']:<4} {row['nodes']:>3} nodes  {row['description']}"
        )
    return 0


async def cmd_projection(args: argparse.Namespace) -> int:
    from orchestrator.runtime.engine import Engine
    from orchestrator.runtime.store import Store

    topology = Topology.from_env(args.namespace)
    bus = await Bus.connect(args.nats, topology, name="conveyor-projection")
    if args.rebuild:
        await bus.ensure_topology()
        await bus.delete_consumer(
            topology.events_stream, topology.projection_consumer(args.partition)
        )
        await asyncio.to_thread(_remove_sqlite, args.db)
        print(f"projection reset: {args.db} is rebuilt from the event stream", file=sys.stderr)
    store = await Store.open(args.db)
    engine = Engine(bus, store, partition=args.partition, projection=True)
    await engine.start()
    _on_signals(engine.stop)
    try:
        await engine.run()
    finally:
        await bus.close()
        await store.close()
    return 0


def _remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def cmd_publish(args: argparse.Namespace) -> int:
    from events.envelope import CloudEvent

    data = _json_value(args.data) if args.data is not None else None
    extensions = dict(_pair(e) for e in args.ext or [])
    for name in extensions:
        if not name.isalnum() or not name.islower() or len(name) > 20:
            raise UsageError(f"--ext {name!r}: extension names are 1-20 lowercase letters/digits")
    async with _bus(args) as bus:
        event = CloudEvent.create(
            args.type, args.source, data, id=args.id, subject=args.subject, extensions=extensions
        )
        subject = bus.topology.ingest_subject(args.type)
        duplicate = await bus.publish(subject, event)
    print(json.dumps({"id": event.id, "subject": subject, "duplicate": duplicate}))
    return 0


def _json_value(text: str) -> Any:
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UsageError(f"--ext {text!r}: expected NAME=VALUE")
    name, value = text.split("=", 1)
    return name, value


async def cmd_schedules(args: argparse.Namespace) -> int:
    import time as _time

    from orchestrator.core.cron import iso, next_instants
    from orchestrator.runtime.registry import Registry

    async with _bus(args) as bus:
        registry = Registry(bus)
        if args.action in ("pause", "resume"):
            if not args.workflow:
                raise UsageError(f"schedules {args.action} needs a WORKFLOW")
            await registry.set_paused(args.workflow, args.action == "pause")
            print(f"schedules of {args.workflow} {args.action}d")
            return 0
        rows: list[dict[str, Any]] = []
        for name in await registry.names():
            spec = (await registry.get(name)).spec
            paused = await registry.is_paused(name)
            for index, schedule in enumerate(spec.schedules):
                upcoming = next_instants(schedule, _time.time(), args.next)
                rows.append(
                    {
                        "workflow": name,
                        "index": index,
                        "cron": schedule.cron,
                        "timezone": schedule.timezone,
                        "catchup": schedule.catchup,
                        "paused": paused,
                        "next": [iso(t, schedule.timezone) for t in upcoming],
                    }
                )
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no scheduled workflows")
    for row in rows:
        state = "paused" if row["paused"] else "next " + ", ".join(row["next"])
        print(f"{row['workflow']:<24} {row['cron']:<16} {row['timezone']:<16} {state}")
    return 0


async def cmd_api(args: argparse.Namespace) -> int:
    """The HTTP API + dashboard, over its own read-side projection (own durable consumer)."""
    from orchestrator.http import ApiServer, create_app
    from orchestrator.runtime.engine import Engine
    from orchestrator.runtime.store import Store

    token = args.token or os.environ.get("CONVEYOR_API_TOKEN")
    if not token and not args.dev:
        raise UsageError("the API needs a token: --token, $CONVEYOR_API_TOKEN, or --dev (open)")
    topology = Topology.from_env(args.namespace)
    bus = await Bus.connect(args.nats, topology, name="conveyor-api")
    await bus.ensure_topology()
    store = await Store.open(args.db)
    projection = Engine(bus, store, partition=args.partition, projection=True)
    await projection.start()
    client = Client(bus)
    server = await ApiServer(
        create_app(store=store, client=client, token=token, dev=args.dev), args.host, args.port
    ).start()
    print(f"dashboard: {server.url}/", file=sys.stderr, flush=True)
    _on_signals(projection.stop)
    try:
        await projection.run()
    finally:
        await server.stop()
        await bus.close()
        await store.close()
    return 0


async def cmd_webhooks(args: argparse.Namespace) -> int:
    from orchestrator.http.server import ApiServer
    from orchestrator.triggers.webhooks import create_gateway, load_hooks

    config = load_hooks(args.hooks)
    bus = await Bus.connect(args.nats, Topology.from_env(args.namespace), name="conveyor-webhooks")
    await bus.ensure_topology()
    server = await ApiServer(create_gateway(bus, config), args.host, args.port).start()
    print(
        f"webhook gateway on {server.url}/hooks/<name> ({', '.join(config.hooks) or 'no hooks'})",
        file=sys.stderr,
        flush=True,
    )
    try:
        await _until_signal()
    finally:
        await server.stop()
        await bus.close()
    return 0


async def cmd_runs(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        runs = await client.runs(args.workflow, args.status, args.limit)
    if args.json:
        print(json.dumps(runs, default=str))
        return 0
    for run in runs:
        print(f"{run['run_id']}  {run['workflow']:<20} {run['status']:<10}")
    return 0


# ---- helpers ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _bus(args: argparse.Namespace) -> Any:
    bus = await Bus.connect(args.nats, Topology.from_env(args.namespace), name="conveyor-cli")
    try:
        await bus.ensure_topology()
        yield bus
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> Any:
    client = await Client.connect(args.nats, Topology.from_env(args.namespace))
    try:
        yield client
    finally:
        await client.close()


async def _existing_run(client: Client, run_id: str) -> dict[str, Any]:
    """The run's status, or a usage error (exit 2) naming the run."""
    status = await client.status(run_id)
    if status is None:
        raise UsageError(f"no run {run_id!r} (unknown, or not yet applied)")
    return status


def _json_input(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--input must be a JSON object, got {type(value).__name__}")
    return value


def _specs_from_file(path: str) -> list[Any]:
    from orchestrator.core.compiler import validate_spec
    from orchestrator.dsl.loader import load_module

    if path.endswith(".py"):
        loaded = load_module(path)
        if not loaded.workflows:
            raise UsageError(f"{path} defines no @workflow")
        return [wf.spec for wf in loaded.workflows.values()]
    text = Path(path).read_text()
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML/JSON: {exc}") from None
    specs = []
    for doc in documents:
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: each document must be a workflow spec object")
        specs.append(validate_spec(doc))
    return specs


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def _until_signal() -> None:
    stopped = asyncio.Event()
    _on_signals(stopped.set)
    await stopped.wait()


def _parser() -> argparse.ArgumentParser:
    env_nats = os.environ.get("CONVEYOR_NATS_URL", DEFAULT_NATS)
    parser = argparse.ArgumentParser(
        prog="conveyor", description="Event-driven, serverless workflows on NATS JetStream."
    )
    parser.add_argument("--log-json", action="store_true", help="JSON log lines (for machines)")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("CONVEYOR_LOG_LEVEL", "warning"),
        choices=["debug", "info", "warning", "error"],
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(
        name: str,
        handler: Callable[[argparse.Namespace], Awaitable[int]],
        help: str,
        nats: bool = True,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        if nats:
            p.add_argument(
                "--nats",
                default=env_nats,
                metavar="URL",
                help=f"NATS server (default: $CONVEYOR_NATS_URL or {DEFAULT_NATS})",
            )
        p.add_argument(
            "--namespace",
            default=None,
            help="isolate streams and subjects (default: $CONVEYOR_NAMESPACE or conveyor)",
        )
        return p

    p = command("dev", cmd_dev, "embedded NATS + orchestrator + worker for MODULE", nats=False)
    p.add_argument("module", help="a Python file or dotted module with workflows and tasks")
    p.add_argument(
        "--port", type=int, default=None, help="NATS port (default 4222; free with --run)"
    )
    p.add_argument("--home", default=str(DEFAULT_HOME), help="state directory (default .conveyor)")
    p.add_argument("--run", metavar="WORKFLOW", help="run WORKFLOW once, show progress, then exit")
    p.add_argument("--input", help="run input as a JSON object (or @file.json)")
    p.add_argument("--json", action="store_true", help="with --run: print only the final JSON")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--timeout", type=float, default=None, help="with --run: give up after N s")
    p.add_argument("--hooks", help="also serve the webhook gateway for this hooks file")
    p.add_argument(
        "--api-port",
        type=int,
        default=None,
        help="dashboard/API port (default 8080; not started with --run unless given)",
    )
    p.add_argument("--webhook-port", type=int, default=8090)

    def metrics_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve Prometheus metrics on this port (/metrics)",
        )
        p.add_argument("--metrics-host", default="127.0.0.1")

    p = command("orchestrator", cmd_orchestrator, "run the orchestrator (engine + status API)")
    metrics_options(p)
    p.add_argument("--db", default=str(DEFAULT_HOME / "conveyor.db"), help="sqlite store path")
    p.add_argument("--partition", type=int, default=0)

    p = command("worker", cmd_worker, "serve MODULE's tasks (and register its workflows)")
    metrics_options(p)
    p.add_argument("module")
    p.add_argument("--queue", action="append", help="serve only this queue (repeatable)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--grace", type=float, default=30.0, help="seconds to finish tasks on SIGTERM")

    p = command(
        "register", cmd_register, "register workflows from a Python module or YAML/JSON spec"
    )
    p.add_argument("file")

    p = command("run", cmd_run, "trigger a run of WORKFLOW (prints the run id)")
    p.add_argument("workflow")
    p.add_argument("--input", help="run input as a JSON object (or @file.json)")
    p.add_argument("--key", help="idempotency key: the same key gives the same run")
    p.add_argument("--version", type=int, default=None, help="pin a workflow version")
    p.add_argument("--wait", action="store_true", help="follow the run and print its result")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after N s")

    p = command("status", cmd_status, "show a run")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")

    p = command("cancel", cmd_cancel, "cancel a run")
    p.add_argument("run_id")
    p.add_argument("--reason", default="cancelled from the CLI")

    p = command("retry", cmd_retry, "resume a failed or cancelled run from its failed nodes")
    p.add_argument("run_id")
    p.add_argument("--wait", action="store_true", help="follow the run and print its result")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=None)

    p = command("logs", cmd_logs, "show the log lines of a run's tasks")
    p.add_argument("run_id")
    p.add_argument("--node", help="only this node (a mapped node includes its children)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.add_argument("--json", action="store_true", help="one JSON LogLine per line")

    p = command("workflows", cmd_workflows, "list registered workflows")
    p.add_argument("--json", action="store_true")

    p = command("projection", cmd_projection, "run the read-side projection (for the API)")
    p.add_argument("--db", default=str(DEFAULT_HOME / "projection.db"))
    p.add_argument("--partition", type=int, default=0)
    p.add_argument("--rebuild", action="store_true", help="start over from the event stream")

    p = command("publish", cmd_publish, "publish a CloudEvent on the ingest subjects")
    p.add_argument("type", help="the event type, e.g. com.shop.order.created")
    p.add_argument("--source", required=True, help="the event source, e.g. shop/orders")
    p.add_argument("--subject", help="the event subject")
    p.add_argument("--id", help="the event id (default: a new UUID)")
    p.add_argument("--data", help="JSON data (or @file.json)")
    p.add_argument("--ext", action="append", help="an extension attribute NAME=VALUE")

    p = command("schedules", cmd_schedules, "list cron schedules; pause or resume a workflow's")
    p.add_argument("action", nargs="?", default="list", choices=["list", "pause", "resume"])
    p.add_argument("workflow", nargs="?")
    p.add_argument("--next", type=int, default=3, help="how many next fire times to show")
    p.add_argument("--json", action="store_true")

    p = command("api", cmd_api, "serve the HTTP API and dashboard (over its own projection)")
    p.add_argument("--db", default=str(DEFAULT_HOME / "projection.db"))
    p.add_argument("--partition", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", help="bearer token required by the API (or $CONVEYOR_API_TOKEN)")
    p.add_argument("--dev", action="store_true", help="no token: open API (development only)")

    p = command("webhooks", cmd_webhooks, "run the webhook gateway (POST /hooks/<name>)")
    p.add_argument("--hooks", required=True, help="the hooks file (YAML), see docs/operations.md")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)

    p = command("runs", cmd_runs, "list recent runs")
    p.add_argument("--workflow")
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    return parser
