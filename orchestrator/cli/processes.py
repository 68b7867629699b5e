"""The long-running processes: orchestrator, worker, api, projection, webhooks, dev.

Each builds its role in the composition root (`orchestrator.roles`) and runs it under the
supervisor until a signal (exit 0 after a graceful drain) or a component's failure (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.ids import is_token
from orchestrator import roles
from orchestrator.cli.common import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    Connection,
    UsageError,
    cli_actor,
    json_object,
    typed,
)
from orchestrator.cli.runs import follow
from orchestrator.core.compiler import compile_spec
from orchestrator.core.rules import input_problems
from orchestrator.core.trigger import CLI_SOURCE
from orchestrator.dsl.loader import LoadedModule, load_module
from orchestrator.errors import InvalidInput, UnknownWorkflow
from orchestrator.runtime.leases import MIN_LEASE_S
from orchestrator.runtime.registry import Registry


@dataclass(frozen=True, slots=True)
class MetricsArgs:
    metrics_port: int | None
    metrics_host: str


def _common(ns: argparse.Namespace, **overrides: Any) -> roles.Common:
    metrics = typed(MetricsArgs, ns) if hasattr(ns, "metrics_port") else None
    if metrics is not None:
        overrides.setdefault("metrics_port", metrics.metrics_port)
        overrides.setdefault("metrics_host", metrics.metrics_host)
    return typed(Connection, ns).common(**overrides)


def _ready(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class OrchestratorArgs:
    db: str
    partition: int
    topology: roles.TopologyMode
    lease: bool
    replica_id: str | None
    state_dir: str | None
    lease_seconds: float
    snapshot_interval: float
    rejoin_timeout: float


async def cmd_orchestrator(ns: argparse.Namespace) -> int:
    args = typed(OrchestratorArgs, ns)
    if args.lease:
        return await _leased_orchestrator(ns, args)
    async with roles.Process(_common(ns)) as process:
        await roles.orchestrator(
            process, db=args.db, partition=args.partition, topology=args.topology
        )
        return await process.serve(
            lambda: _ready(f"orchestrator ready (partition {args.partition}, db {args.db})")
        )


async def _leased_orchestrator(ns: argparse.Namespace, args: OrchestratorArgs) -> int:
    if not MIN_LEASE_S <= args.lease_seconds < float("inf"):
        raise UsageError(
            f"--lease-seconds must be a finite number of seconds, at least {MIN_LEASE_S:g}; "
            f"got {args.lease_seconds:g}"
        )
    if not args.snapshot_interval > 0:
        raise UsageError(f"--snapshot-interval must be > 0, got {args.snapshot_interval:g}")
    if not args.rejoin_timeout >= args.lease_seconds:
        raise UsageError(
            f"--rejoin-timeout must be at least --lease-seconds ({args.lease_seconds:g}), "
            f"got {args.rejoin_timeout:g}"
        )
    if args.replica_id is not None and not (
        is_token(args.replica_id) and len(args.replica_id) <= 64
    ):
        raise UsageError(f"--replica-id {args.replica_id!r} must be 1-64 of [A-Za-z0-9_-]")
    async with roles.Process(_common(ns)) as process:
        ownership = await roles.leased_orchestrator(
            process,
            state_dir=args.state_dir,
            lease_s=args.lease_seconds,
            snapshot_interval_s=args.snapshot_interval,
            rejoin_timeout_s=args.rejoin_timeout,
            topology=args.topology,
            replica=args.replica_id,
        )
        partitions = process.common.topology.partitions
        return await process.serve(
            lambda: _ready(
                f"orchestrator ready (lease mode, replica {ownership.replica}, "
                f"{partitions} partition(s) shared)"
            )
        )


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    module: str
    queue: list[str] | None
    concurrency: int
    grace: float


async def cmd_worker(ns: argparse.Namespace) -> int:
    args = typed(WorkerArgs, ns)
    loaded = load_module(args.module)
    if not loaded.tasks:
        raise UsageError(f"{args.module} defines no @task to serve")
    async with roles.Process(_common(ns)) as process:
        worker = await roles.worker(
            process,
            loaded.tasks.values(),
            queues=args.queue or None,
            concurrency=args.concurrency,
            grace_s=args.grace,
        )
        for spec in await Registry(worker.bus).register_all(_specs(loaded)):
            print(f"workflow {spec.name} version {spec.version} registered", file=sys.stderr)
        code = await process.serve(
            lambda: _ready(f"worker ready (queues: {', '.join(worker.queues)})")
        )
    if worker.stuck_threads():
        # A sync task outlived the grace period; its message was handed back. Python cannot
        # interrupt the thread, and waiting for it would block the exit: leave now.
        _ready(f"worker exiting with {worker.stuck_threads()} task thread(s) still busy")
        os._exit(code)
    return code


def _specs(loaded: LoadedModule) -> list[Any]:
    return [wf.spec for wf in loaded.workflows.values()]


@dataclass(frozen=True, slots=True)
class ApiArgs:
    db: str
    host: str
    port: int
    token: str | None
    dev: bool


async def cmd_api(ns: argparse.Namespace) -> int:
    """The HTTP API + dashboard, over its own read-side projection."""
    args = typed(ApiArgs, ns)
    token = args.token  # the flag, else $CONVEYOR_API_TOKEN or the file (the settings model)
    if not token and not args.dev:
        raise UsageError("the API needs a token: --token, $CONVEYOR_API_TOKEN, or --dev (open)")
    async with roles.Process(_common(ns)) as process:
        server = await roles.api(
            process,
            db=args.db,
            host=args.host,
            port=args.port,
            token=token,
            dev=args.dev,
        )
        return await process.serve(lambda: _ready(f"dashboard: {server.url}/"))


@dataclass(frozen=True, slots=True)
class ProjectionArgs:
    db: str
    rebuild: bool


async def cmd_projection(ns: argparse.Namespace) -> int:
    args = typed(ProjectionArgs, ns)
    async with roles.Process(_common(ns)) as process:
        await roles.projection(process, db=args.db, rebuild=args.rebuild)
        if args.rebuild:
            _ready(f"projection reset: {args.db} is rebuilt from the event stream")
        return await process.serve()


@dataclass(frozen=True, slots=True)
class WebhooksArgs:
    hooks: str
    host: str
    port: int


async def cmd_webhooks(ns: argparse.Namespace) -> int:
    args = typed(WebhooksArgs, ns)
    async with roles.Process(_common(ns)) as process:
        server = await roles.gateway(process, hooks=args.hooks, host=args.host, port=args.port)
        return await process.serve(lambda: _ready(f"webhook gateway on {server.url}/hooks/<name>"))


@dataclass(frozen=True, slots=True)
class DevArgs:
    module: str
    port: int | None
    home: str
    run: str | None
    input: str | None
    json: bool
    concurrency: int
    timeout: float | None
    hooks: str | None
    api_port: int | None
    webhook_port: int


async def cmd_dev(ns: argparse.Namespace) -> int:
    """Everything in one process on an embedded nats-server: orchestrator, worker, dashboard
    (and the webhook gateway with --hooks); with --run, one run followed to its end."""
    args = typed(DevArgs, ns)
    loaded = load_module(args.module)  # fail on a bad module before starting anything
    if not loaded.workflows and not loaded.tasks:
        raise UsageError(f"{args.module} defines no @workflow and no @task")
    if args.run and args.run not in loaded.workflows:
        raise UnknownWorkflow(args.run, known=list(loaded.workflows))
    input_data = json_object(args.input) if args.run else {}
    if args.run:  # the machine's own check, before anything starts
        problems = input_problems(compile_spec(loaded.workflows[args.run].spec), dict(input_data))
        if problems:
            raise InvalidInput(args.run, problems)
    common = _common(ns, metrics_port=None)
    async with roles.Process(common) as process:
        urls = await _dev_components(process, args, loaded)
        if not args.run:
            workflows = ", ".join(sorted(loaded.workflows)) or "none"

            def ready() -> None:
                _ready(f"conveyor dev: NATS at {urls['nats']}, workflows: {workflows}")
                if "dashboard" in urls:
                    _ready(f"  dashboard: {urls['dashboard']}/  (dev mode: no token)")
                if "webhooks" in urls:
                    _ready(f"  webhooks: {urls['webhooks']}/hooks/<name>")
                _ready(f"  trigger one with: conveyor run <workflow> --nats {urls['nats']} --wait")

            return await process.serve(ready)
        return await _dev_run(process, args, args.run, input_data)


async def _dev_components(
    process: roles.Process, args: DevArgs, loaded: LoadedModule
) -> dict[str, str]:
    """Start the embedded server and build every role on it; the URLs of what serves."""
    home = Path(args.home)
    port = args.port if args.port is not None else (None if args.run else 4222)
    # Started from this (the main) thread: the server dies with it, even on kill -9.
    server = roles.embedded_server(process, home / "nats", port)
    common = process.common
    process.common = dataclasses.replace(common, nats=common.nats.with_servers(server.url))
    urls = {"nats": server.url}
    engine = await roles.orchestrator(process, db=home / "conveyor.db", topology="apply")
    await Registry(engine.bus).register_all(_specs(loaded))
    if loaded.tasks:
        await roles.worker(process, loaded.tasks.values(), concurrency=args.concurrency)
    if not args.run or args.api_port is not None:
        api_port = 8080 if args.api_port is None else args.api_port
        dashboard = await roles.api(process, db=home / "projection.db", port=api_port, dev=True)
        urls["dashboard"] = dashboard.url
    if args.hooks:
        gateway = await roles.gateway(process, hooks=args.hooks, port=args.webhook_port)
        urls["webhooks"] = gateway.url
    return urls


async def _dev_run(
    process: roles.Process, args: DevArgs, workflow: str, input_data: dict[str, Any]
) -> int:
    """Serve while one run is followed to its end; then stop everything. A component failing
    under the run ends it all (exit 1)."""
    client = await roles.client(process, source=CLI_SOURCE, actor=cli_actor())
    supervisor = process.build_supervisor()
    await supervisor.start()
    serving = asyncio.create_task(supervisor.serve())

    async def trigger_and_follow() -> int:
        run_id = await client.trigger(workflow, input_data)
        if not args.json:
            print(run_id, flush=True)
        return await follow(client, workflow, run_id, args.json, args.timeout)

    following = asyncio.create_task(trigger_and_follow())
    await asyncio.wait({serving, following}, return_when=asyncio.FIRST_COMPLETED)
    if not following.done():
        following.cancel()
        await serving
        return EXIT_RUN_FAILED
    supervisor.stop()
    code = await serving
    # Raised only now, everything stopped: a refused trigger is one line, not every component
    # crashing on a connection closed under it.
    result = following.result()
    return result if code == EXIT_OK else code
