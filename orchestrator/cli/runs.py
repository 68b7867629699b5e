"""Commands about runs: run, status, cancel, retry, logs, runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from events.errors import ConveyorError
from events.models import LogLine
from orchestrator.cli.common import (
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_TIMEOUT,
    Connection,
    UsageError,
    connected_client,
    existing_run,
    json_object,
    typed,
)
from orchestrator.cli.progress import Progress, Tally, node_text, summary
from orchestrator.client import Client
from orchestrator.core.rules import retry_refusal
from orchestrator.core.statuses import RUN_TERMINAL, RunStatus
from orchestrator.errors import UnknownWorkflow


@dataclass(frozen=True, slots=True)
class RunArgs:
    workflow: str
    input: str | None
    key: str | None
    version: int | None
    wait: bool
    json: bool
    timeout: float | None


def _timeout_needs_wait(timeout: float | None, wait: bool) -> None:
    if timeout is not None and not wait:
        raise UsageError("--timeout bounds the waiting: it goes with --wait")


async def cmd_run(ns: argparse.Namespace) -> int:
    args = typed(RunArgs, ns)
    _timeout_needs_wait(args.timeout, args.wait)
    input_data = json_object(args.input)
    async with connected_client(typed(Connection, ns)) as client:
        run_id = await client.trigger(
            args.workflow, input_data, idempotency_key=args.key, version=args.version
        )
        if not args.wait:
            print(json.dumps({"run_id": run_id}) if args.json else run_id)
            return EXIT_OK
        if not args.json:
            print(run_id, flush=True)
        return await follow(client, args.workflow, run_id, args.json, args.timeout)


async def follow(
    client: Client,
    workflow: str,
    run_id: str,
    as_json: bool,
    timeout: float | None,
    newer_than: float | None = None,
) -> int:
    """Follow a run live until it ends; print its result. Giving up (a timeout, Ctrl-C) says
    that the run carries on, and how to see it later."""
    progress = Progress(run_id, workflow)
    limits: dict[str, int] | None = None

    async def update(status: dict[str, Any]) -> None:
        nonlocal limits
        if limits is None:
            limits = await max_attempts_of(client, status)
            progress.set_max_attempts(limits)
        progress.update(status)

    try:
        with progress:
            final = await client.wait(run_id, update, timeout=timeout, newer_than=newer_than)
    except TimeoutError:
        print(
            f"gave up waiting after {timeout:g}s; run {run_id} carries on "
            f"(see it with: conveyor status {run_id})",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    except asyncio.CancelledError:
        print(
            f"\nstopped following; run {run_id} carries on (conveyor status {run_id}, "
            f"conveyor cancel {run_id})",
            file=sys.stderr,
        )
        raise
    if as_json:
        print(json.dumps(final, default=str))
    else:
        print(summary(final, limits))
    return EXIT_OK if final["status"] == RunStatus.SUCCEEDED else EXIT_RUN_FAILED


async def max_attempts_of(client: Client, status: dict[str, Any]) -> dict[str, int]:
    """Each node's retry budget, from the spec version the run pinned ({} if it is gone)."""
    try:
        spec = await client.registry.get(status["workflow"], status["version"])
    except ConveyorError:
        return {}
    return {node_id: node.spec.retry.max_attempts for node_id, node in spec.nodes.items()}


@dataclass(frozen=True, slots=True)
class RunIdArgs:
    run_id: str
    json: bool = False


async def cmd_status(ns: argparse.Namespace) -> int:
    args = typed(RunIdArgs, ns)
    async with connected_client(typed(Connection, ns)) as client:
        status = await existing_run(client, args.run_id)
        limits = {} if args.json else await max_attempts_of(client, status)
    if args.json:
        print(json.dumps(status, default=str))
        return EXIT_OK
    print(
        f"run {status['run_id']} · {status['workflow']} v{status['version']} · {status['status']}"
    )
    print("  " + Tally(status).line(status.get("duration_s") or 0.0))
    for name, node in status["nodes"].items():
        print(f"  {name}: {node_text(node, limits.get(name))}")
        if node.get("no_worker"):
            print(f"      {node['no_worker']['message']}")
        if node.get("error"):
            print(f"      {node['error'].get('type')}: {node['error'].get('message')}")
    for note in status.get("notifications") or []:
        outcome = "delivered" if note["delivered"] else note.get("error") or "failed"
        print(f"  webhook {note['url']} attempt {note['attempt']}: {outcome}")
    ending = summary(status, limits).split("\n", 1)
    if len(ending) > 1:
        print(ending[1])
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class CancelArgs:
    run_id: str
    reason: str


async def cmd_cancel(ns: argparse.Namespace) -> int:
    args = typed(CancelArgs, ns)
    async with connected_client(typed(Connection, ns)) as client:
        status = await existing_run(client, args.run_id)
        if status["status"] in RUN_TERMINAL:
            raise UsageError(f"run {args.run_id} already {status['status']}: nothing to cancel")
        await client.cancel(args.run_id, args.reason)
    print(f"cancel requested for {args.run_id}")
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class RetryArgs:
    run_id: str
    wait: bool
    json: bool
    timeout: float | None


async def cmd_retry(ns: argparse.Namespace) -> int:
    args = typed(RetryArgs, ns)
    _timeout_needs_wait(args.timeout, args.wait)
    async with connected_client(typed(Connection, ns)) as client:
        status = await existing_run(client, args.run_id)
        refusal = retry_refusal(status["status"], status.get("error"))
        if refusal is not None:
            raise UsageError(f"run {args.run_id} cannot be retried: {refusal}")
        await client.retry(args.run_id)
        if not args.wait:
            print(f"retry requested for {args.run_id}")
            return EXIT_OK
        return await follow(
            client,
            status["workflow"],
            args.run_id,
            args.json,
            args.timeout,
            newer_than=status["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class LogsArgs:
    run_id: str
    node: str | None
    follow: bool
    json: bool


_PAGE = 1000


async def cmd_logs(ns: argparse.Namespace) -> int:
    args = typed(LogsArgs, ns)
    async with connected_client(typed(Connection, ns)) as client:
        status = await existing_run(client, args.run_id)
        if args.node is not None and args.node.split("[")[0] not in status["nodes"]:
            known = ", ".join(status["nodes"])
            raise UsageError(f"run {args.run_id} has no node {args.node!r} (it has: {known})")
        topo = client.topology
        subject = topo.log_subject(args.run_id, args.node.split("[")[0] if args.node else "*")

        async def show(delivery: Any) -> None:
            try:
                line = LogLine.model_validate_json(delivery.data)
            except ValueError:
                return
            if args.node is not None and args.node not in (
                line.node_id,
                line.node_id.split("[")[0],
            ):
                return
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
                    topo.logs_stream, subject, start_seq=start, limit=_PAGE
                )
                for delivery in page:
                    await show(delivery)
                if len(page) < _PAGE:
                    return EXIT_OK
                start = page[-1].stream_seq + 1
        sub = await client.bus.follow_stream(topo.logs_stream, subject, show)
        try:
            # Follow until the run ends (then give in-flight lines a moment to arrive).
            await client.wait(args.run_id)
            await client.bus.flush()
        finally:
            await sub.unsubscribe()
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class RunsArgs:
    workflow: str | None
    status: str | None
    limit: int
    json: bool


async def cmd_runs(ns: argparse.Namespace) -> int:
    args = typed(RunsArgs, ns)
    async with connected_client(typed(Connection, ns)) as client:
        if (
            args.workflow is not None
            and await client.registry.latest_version(args.workflow) is None
        ):
            raise UnknownWorkflow(args.workflow, known=await client.registry.names())
        runs = await client.runs(args.workflow, args.status, args.limit)
    if args.json:
        print(json.dumps(runs, default=str))
        return EXIT_OK
    if not runs:
        print("no runs" + (f" of {args.workflow}" if args.workflow else ""), file=sys.stderr)
    for run in runs:
        print(f"{run['run_id']}  {run['workflow']:<20} {run['status']:<10}")
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
        "run",
        cmd_run,
        "trigger a run of WORKFLOW (prints the run id)",
        "conveyor run ml_pipeline --input '{\"rows\": 500}' --wait",
    )
    p.add_argument("workflow")
    p.add_argument("--input", help="run input as a JSON object (or @file.json)")
    p.add_argument("--key", help="idempotency key: the same key gives the same run")
    p.add_argument("--version", type=int, default=None, help="pin a workflow version")
    p.add_argument("--wait", action="store_true", help="follow the run and print its result")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--timeout", type=float, default=None, help="with --wait: stop waiting after N s"
    )

    p = command("status", cmd_status, "show a run", "conveyor status 0192f3a1c2b4d5e6f7a8b9c0")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")

    p = command("cancel", cmd_cancel, "cancel a run", "conveyor cancel RUN_ID --reason 'bad data'")
    p.add_argument("run_id")
    p.add_argument("--reason", default="cancelled from the CLI")

    p = command(
        "retry",
        cmd_retry,
        "resume a failed or cancelled run from its failed nodes",
        "conveyor retry RUN_ID --wait",
    )
    p.add_argument("run_id")
    p.add_argument("--wait", action="store_true", help="follow the run and print its result")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=None)

    p = command(
        "logs", cmd_logs, "show the log lines of a run's tasks", "conveyor logs RUN_ID --follow"
    )
    p.add_argument("run_id")
    p.add_argument("--node", help="only this node (a mapped node includes its children)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.add_argument("--json", action="store_true", help="one JSON LogLine per line")

    p = command("runs", cmd_runs, "list recent runs", "conveyor runs --status failed --limit 5")
    p.add_argument("--workflow")
    p.add_argument("--status", choices=[s.value for s in RunStatus])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
