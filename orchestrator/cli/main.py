"""`conveyor`: the command line — the parser, logging, and errors turned into exit codes.

The commands live in one module per group: `runs.py` (run, status, cancel, retry, logs, runs),
`catalog.py` (register, workflows, schedules, publish, topology), `processes.py` (orchestrator,
worker, api, projection, webhooks, dev), `replay.py`. Exit codes are in `common.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from importlib import metadata
from typing import Any, NoReturn

from events.config import SettingsError
from events.errors import BusError, ConveyorError, ServerError
from events.logs import configure_logging
from events.otel import OtelError
from orchestrator.cli import catalog, config, processes, replay, runs
from orchestrator.cli.common import (
    DEFAULT_HOME,
    EXIT_INTERRUPTED,
    EXIT_NATS,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    UsageError,
    add_connection_options,
)
from orchestrator.errors import (
    ConfigError,
    InvalidInput,
    RunRefused,
    SpecError,
    UnknownRun,
    UnknownWorkflow,
    WorkflowDefinitionError,
)
from orchestrator.runtime import loop
from orchestrator.runtime.supervisor import StartupFailed

_USAGE_ERRORS = (
    UsageError,
    UnknownWorkflow,
    UnknownRun,
    RunRefused,
    InvalidInput,
    SpecError,
    WorkflowDefinitionError,
    ConfigError,
    OtelError,
    FileNotFoundError,
    ImportError,
)


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        args = parse_args(argv)
    except SettingsError as exc:  # a configuration file or variable that does not parse
        print(f"error: {exc}", file=sys.stderr)
        _exit(EXIT_USAGE)
    extra = []
    if args.handler in (processes.cmd_worker, processes.cmd_dev):
        from workers.logcapture import structlog_processor  # the composition root may

        extra.append(structlog_processor)
    configure_logging(json=args.log_json, level=args.log_level, extra_processors=extra)
    try:
        code = loop.run(args.handler(args))
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BaseException as exc:
        code = _report(exc)
    _exit(code)


def _report(exc: BaseException) -> int:
    cause = exc.cause if isinstance(exc, StartupFailed) else exc
    if isinstance(cause, SystemExit):
        raise cause
    if isinstance(cause, _USAGE_ERRORS):
        print(f"error: {cause}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(cause, BusError):
        print(f"error: {cause}", file=sys.stderr)
        return EXIT_NATS
    if isinstance(cause, ServerError | ConveyorError | OSError):
        where = f"{exc.component}: " if isinstance(exc, StartupFailed) else ""
        print(f"error: {where}{cause}", file=sys.stderr)
        return EXIT_RUN_FAILED
    raise exc


def _exit(code: int) -> NoReturn:
    """Exit with `code`, even if a library left a non-daemon thread behind (an unclosed sqlite
    reader once kept a failed orchestrator alive, deaf to SIGTERM, forever)."""
    sys.stdout.flush()
    sys.stderr.flush()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(not t.daemon and t.is_alive() for t in others):
        os._exit(code)
    sys.exit(code)


def _version() -> str:
    try:
        return metadata.version("conveyor")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed flags, each setting not given taking its value from the settings model
    (environment, conveyor.toml, default). SettingsError for a value that does not parse."""
    args = build_parser().parse_args(argv)
    config.fill_unset(args)
    return args


def build_parser() -> argparse.ArgumentParser:
    # Options every command takes, before or after the command's name.
    shared = argparse.ArgumentParser(add_help=False)
    logging = shared.add_argument_group("logging")
    logging.add_argument(
        "--log-json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="JSON log lines (for machines)",
    )
    logging.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=argparse.SUPPRESS,
        help="($CONVEYOR_LOG_LEVEL, default warning)",
    )
    add_connection_options(shared)

    parser = argparse.ArgumentParser(
        prog="conveyor",
        description="Event-driven, serverless workflows on NATS JetStream.",
        parents=[shared],
        epilog="Run `conveyor COMMAND --help` for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"conveyor {_version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    processes_register(sub, [shared])
    runs.register(sub, [shared])
    catalog.register(sub, [shared])
    replay.register(sub, [shared])
    config.register(sub, [shared], parser)
    # Every flag bound to a setting defaults to its value in the environment or conveyor.toml.
    config.apply_defaults(parser)
    return parser


def processes_register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
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

    def metrics_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve Prometheus /metrics and /healthz on this port",
        )
        p.add_argument("--metrics-host", default="127.0.0.1")

    p = command(
        "dev",
        processes.cmd_dev,
        "embedded NATS + orchestrator + worker + dashboard for MODULE",
        "conveyor dev examples/ml_pipeline.py --run ml_pipeline",
    )
    p.add_argument("module", help="a Python file or dotted module with workflows and tasks")
    p.add_argument(
        "--port", type=int, default=None, help="NATS port (default 4222; a free one with --run)"
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

    p = command(
        "orchestrator",
        processes.cmd_orchestrator,
        "run the orchestrator of one partition (engine, status API, triggers), or with --lease "
        "one of any number of replicas sharing every partition",
        "conveyor orchestrator --db /var/lib/conveyor/p0.db --metrics-port 9090",
    )
    metrics_options(p)
    p.add_argument("--db", default=str(DEFAULT_HOME / "conveyor.db"), help="sqlite store path")
    p.add_argument(
        "--partition",
        type=int,
        default=0,
        help="the partition this orchestrator owns ($CONVEYOR_PARTITION, default 0)",
    )
    p.add_argument(
        "--topology",
        choices=["auto", "apply", "check"],
        default="auto",
        help="create/update the streams (apply) or wait for them (check); auto: apply with "
        "CONVEYOR_REPLICAS=1, check on a cluster ($CONVEYOR_TOPOLOGY)",
    )
    lease = p.add_argument_group(
        "lease mode", "any number of replicas share every partition (docs/failover.md)"
    )
    lease.add_argument(
        "--lease",
        action="store_true",
        default=False,
        help="claim partitions through leases instead of serving --partition "
        "($CONVEYOR_ORCHESTRATOR_LEASE=1)",
    )
    lease.add_argument(
        "--replica-id",
        default=None,
        help="this replica's name in the leases, unique among live replicas (e.g. the pod "
        "name; default: random; $CONVEYOR_REPLICA_ID)",
    )
    lease.add_argument(
        "--state-dir",
        default=None,
        help="where the held partitions' stores are cached (default: a temporary directory; "
        "$CONVEYOR_STATE_DIR)",
    )
    lease.add_argument(
        "--lease-seconds",
        type=float,
        default=5.0,
        help="a silent holder loses its partitions after this long (minimum 1; default 5; "
        "$CONVEYOR_LEASE_SECONDS)",
    )
    lease.add_argument(
        "--snapshot-interval",
        type=float,
        default=30.0,
        help="seconds between snapshots of a partition that changed (default 30; "
        "$CONVEYOR_SNAPSHOT_INTERVAL)",
    )
    lease.add_argument(
        "--rejoin-timeout",
        type=float,
        default=30.0,
        help="exit non-zero when the leases bucket could not be written for this long, so a "
        "supervisor starts a fresh replica (at least --lease-seconds; default 30; "
        "$CONVEYOR_REJOIN_TIMEOUT)",
    )

    p = command(
        "worker",
        processes.cmd_worker,
        "serve MODULE's tasks (and register its workflows)",
        "conveyor worker flows.py --concurrency 32",
    )
    metrics_options(p)
    p.add_argument("module")
    p.add_argument("--queue", action="append", help="serve only this queue (repeatable)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--grace", type=float, default=30.0, help="seconds to finish tasks on SIGTERM")

    p = command(
        "projection",
        processes.cmd_projection,
        "run the read-side projection (for the API)",
        "conveyor projection --rebuild",
    )
    p.add_argument("--db", default=str(DEFAULT_HOME / "projection.db"))
    p.add_argument("--rebuild", action="store_true", help="start over from the event stream")

    p = command(
        "api",
        processes.cmd_api,
        "serve the HTTP API and dashboard (over its own projection)",
        "CONVEYOR_API_TOKEN=s3cret conveyor api --host 0.0.0.0 --port 8080",
    )
    p.add_argument("--db", default=str(DEFAULT_HOME / "projection.db"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", help="bearer token required by the API (or $CONVEYOR_API_TOKEN)")
    p.add_argument("--dev", action="store_true", help="no token: open API (development only)")

    p = command(
        "webhooks",
        processes.cmd_webhooks,
        "run the webhook gateway (POST /hooks/<name>)",
        "conveyor webhooks --hooks hooks.yaml --port 8090",
    )
    p.add_argument("--hooks", required=True, help="the hooks file (YAML), see docs/operations.md")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
