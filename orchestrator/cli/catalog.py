"""Commands about what is registered and published: register, workflows, schedules, publish,
topology."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from events.envelope import CloudEvent
from events.permissions import ROLES, authorization_block
from orchestrator.cli.common import (
    EXIT_OK,
    Connection,
    UsageError,
    connected_bus,
    connected_client,
    json_value,
    typed,
)
from orchestrator.core.admission import admit_version
from orchestrator.core.cron import iso, next_instants
from orchestrator.core.spec import WorkflowSpec
from orchestrator.core.status import flow_text
from orchestrator.dsl.loader import load_module
from orchestrator.runtime.registry import Registry


@dataclass(frozen=True, slots=True)
class RegisterArgs:
    file: str


async def cmd_register(ns: argparse.Namespace) -> int:
    args = typed(RegisterArgs, ns)
    specs = specs_from_file(args.file)
    async with connected_bus(typed(Connection, ns)) as bus:
        for stored in await Registry(bus).register_all(specs):
            print(f"registered {stored.name} version {stored.version}")
    return EXIT_OK


def specs_from_file(path: str) -> list[WorkflowSpec]:
    """The workflows of a Python module, or the specs of a YAML/JSON file (each document one
    spec); every problem is reported before anything is registered."""
    if path.endswith(".py"):
        loaded = load_module(path)
        if not loaded.workflows:
            raise UsageError(f"{path} defines no @workflow")
        return [wf.spec for wf in loaded.workflows.values()]
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML/JSON: {exc}") from None
    specs = []
    for doc in documents:
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: each document must be a workflow spec object")
        specs.append(admit_version(doc).spec)
    return specs


@dataclass(frozen=True, slots=True)
class ListArgs:
    json: bool


async def cmd_workflows(ns: argparse.Namespace) -> int:
    args = typed(ListArgs, ns)
    async with connected_bus(typed(Connection, ns)) as bus:
        rows = [
            {
                "name": spec.name,
                "version": spec.version,
                "nodes": len(spec.nodes),
                "description": spec.description.split("\n")[0],
            }
            for spec in await Registry(bus).specs()
        ]
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    for row in rows:
        print(
            f"{row['name']:<24} v{row['version']:<4} {row['nodes']:>3} nodes  {row['description']}"
        )
    return EXIT_OK


async def cmd_flow(ns: argparse.Namespace) -> int:
    """Every limit and every debounce or batch at work, with its counts per key."""
    args = typed(ListArgs, ns)
    async with connected_client(typed(Connection, ns)) as client:
        entities = await client.flows()
    if args.json:
        print(json.dumps(entities))
    elif not entities:
        print("no limit holds or queues anything, no debounce or batch holds events")
    for entity in [] if args.json else entities:
        print(flow_text(entity))
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class SchedulesArgs:
    action: str
    workflow: str | None
    next: int
    json: bool


async def cmd_schedules(ns: argparse.Namespace) -> int:
    args = typed(SchedulesArgs, ns)
    async with connected_bus(typed(Connection, ns)) as bus:
        registry = Registry(bus)
        if args.action in ("pause", "resume"):
            if not args.workflow:
                raise UsageError(f"schedules {args.action} needs a WORKFLOW")
            await registry.set_paused(args.workflow, args.action == "pause")
            print(f"schedules of {args.workflow} {args.action}d")
            return EXIT_OK
        rows: list[dict[str, Any]] = []
        for spec in await registry.specs():
            paused = await registry.is_paused(spec.name)
            for index, schedule in enumerate(spec.schedules):
                upcoming = next_instants(schedule, time.time(), args.next)
                rows.append(
                    {
                        "workflow": spec.name,
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
        return EXIT_OK
    if not rows:
        print("no scheduled workflows")
    for row in rows:
        state = "paused" if row["paused"] else "next " + ", ".join(row["next"])
        print(f"{row['workflow']:<24} {row['cron']:<16} {row['timezone']:<16} {state}")
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class PublishArgs:
    type: str
    source: str
    subject: str | None
    id: str | None
    data: str | None
    ext: list[str] = field(default_factory=list)


async def cmd_publish(ns: argparse.Namespace) -> int:
    args = typed(PublishArgs, ns)
    data = json_value(args.data, "--data") if args.data is not None else None
    extensions = dict(_pair(e) for e in args.ext or [])
    for name in extensions:
        if not name.isalnum() or not name.islower() or len(name) > 20:
            raise UsageError(f"--ext {name!r}: extension names are 1-20 lowercase letters/digits")
    async with connected_bus(typed(Connection, ns)) as bus:
        event = CloudEvent.create(
            args.type, args.source, data, id=args.id, subject=args.subject, extensions=extensions
        )
        subject = bus.topology.ingest_subject(args.type)
        duplicate = await bus.publish(subject, event)
    print(json.dumps({"id": event.id, "subject": subject, "duplicate": duplicate}))
    return EXIT_OK


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UsageError(f"--ext {text!r}: expected NAME=VALUE")
    name, value = text.split("=", 1)
    return name, value


@dataclass(frozen=True, slots=True)
class TopologyArgs:
    action: str


async def cmd_topology(ns: argparse.Namespace) -> int:
    """`apply`: create or update every stream, the KV bucket and the object store (with
    CONVEYOR_REPLICAS); `check`: say what is missing. One process (this one, as a job) applies;
    every other process only checks."""
    args = typed(TopologyArgs, ns)
    connection = typed(Connection, ns)
    topology = connection.topology()
    # `apply` runs as a job started beside a cluster (compose, a Helm hook): it waits up to the
    # start-up deadline for a server to accept it and for JetStream to answer, as every
    # long-running process does, rather than failing while the cluster forms.
    wait_s = connection.common().startup_timeout_s if args.action == "apply" else 0.0
    async with connected_bus(connection, "conveyor-topology", connect_timeout_s=wait_s) as bus:
        if args.action == "apply":
            changed = await bus.apply_topology(timeout_s=wait_s)
            what = ", ".join(changed) if changed else "nothing to change"
            print(f"topology of {topology.namespace!r} (replicas {topology.replicas}): {what}")
            return EXIT_OK
        missing = await bus.missing_topology()
    if missing:
        raise UsageError(f"the topology of {topology.namespace!r} lacks {', '.join(missing)}")
    print(f"topology of {topology.namespace!r}: complete")
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class NatsConfigArgs:
    role: list[str] | None


async def cmd_nats_config(ns: argparse.Namespace) -> int:
    """Print a nats-server `authorization` block: one user per role, least privilege."""
    args = typed(NatsConfigArgs, ns)
    topology = typed(Connection, ns).topology()
    try:
        print(authorization_block(topology, args.role or ROLES), end="")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    def command(name: str, handler: Any, summary: str, example: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            parents=parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    p = command(
        "register",
        cmd_register,
        "register workflows from a Python module or a YAML/JSON spec",
        "conveyor register flows/pipeline.yaml",
    )
    p.add_argument("file")

    p = command("workflows", cmd_workflows, "list registered workflows", "conveyor workflows")
    p.add_argument("--json", action="store_true")

    p = command(
        "flow",
        cmd_flow,
        "list the limits, debounces and batches at work, with their counts per key",
        "conveyor flow --json",
    )
    p.add_argument("--json", action="store_true")

    p = command(
        "schedules",
        cmd_schedules,
        "list cron schedules; pause or resume a workflow's",
        "conveyor schedules pause nightly_report",
    )
    p.add_argument("action", nargs="?", default="list", choices=["list", "pause", "resume"])
    p.add_argument("workflow", nargs="?")
    p.add_argument("--next", type=int, default=3, help="how many next fire times to show")
    p.add_argument("--json", action="store_true")

    p = command(
        "publish",
        cmd_publish,
        "publish a CloudEvent on the ingest subjects",
        "conveyor publish com.shop.order.created --source shop --data '{\"id\": 7}'",
    )
    p.add_argument("type", help="the event type, e.g. com.shop.order.created")
    p.add_argument("--source", required=True, help="the event source, e.g. shop/orders")
    p.add_argument("--subject", help="the event subject")
    p.add_argument("--id", help="the event id (default: a new UUID)")
    p.add_argument("--data", help="JSON data (or @file.json)")
    p.add_argument("--ext", action="append", help="an extension attribute NAME=VALUE")

    p = command(
        "topology",
        cmd_topology,
        "create/update the streams and buckets (apply) or check them",
        "CONVEYOR_REPLICAS=3 conveyor topology apply --nats nats://n1:4222,nats://n2:4222\n"
        "(apply waits up to CONVEYOR_STARTUP_TIMEOUT seconds, default 30, for NATS and\n"
        "JetStream to answer: a cluster that has just started is still electing leaders)",
    )
    p.add_argument("action", choices=["apply", "check"])

    p = command(
        "nats-config",
        cmd_nats_config,
        "print a nats-server authorization block: one user per role, least privilege",
        "conveyor nats-config --namespace shop > /etc/nats/conveyor-auth.conf",
    )
    p.add_argument(
        "--role",
        action="append",
        choices=list(ROLES),
        help="only this role (repeatable; default: every role)",
    )
