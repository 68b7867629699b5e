"""What every command shares: the options every command takes, typed arguments, exit codes,
and the connections a command opens.

Exit codes: 0 success; 1 a run failed or was cancelled (or a process ended on a failure);
2 bad usage, unknown workflow or run, invalid input or spec; 3 NATS unreachable or the
topology missing; 4 gave up waiting for a run (`--timeout`; the run carries on);
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

from events.bus import Bus
from events.settings import NatsSettings, SettingsError
from events.topology import Topology
from orchestrator.client import Client
from orchestrator.core.trigger import CLI_SOURCE
from orchestrator.roles import Common

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_NATS, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
DEFAULT_HOME = Path(".conveyor")
A = TypeVar("A")


class UsageError(Exception):
    """Bad usage: exit code 2 with the message."""


def typed(cls: type[A], namespace: argparse.Namespace) -> A:
    """The argument dataclass `cls` from parsed flags (fields named as the flags' dests)."""
    assert dataclasses.is_dataclass(cls)
    values = vars(namespace)
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


@dataclasses.dataclass(frozen=True, slots=True)
class Connection:
    """Where NATS is and how to log in, from the flags and `CONVEYOR_*` variables."""

    nats: str | None = None
    namespace: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_nkey_seed: str | None = None
    nats_creds: str | None = None
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None

    def settings(self) -> NatsSettings:
        try:
            return NatsSettings.from_env(
                servers=self.nats,
                user=self.nats_user,
                password=self.nats_password,
                token=self.nats_token,
                nkey_seed=self.nats_nkey_seed,
                creds=self.nats_creds,
                tls_ca=self.nats_tls_ca,
                tls_cert=self.nats_tls_cert,
                tls_key=self.nats_tls_key,
            )
        except SettingsError as exc:
            raise UsageError(str(exc)) from None

    def topology(self) -> Topology:
        try:
            return Topology.from_env(self.namespace)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def common(self, **overrides: Any) -> Common:
        return Common.from_env(nats=self.settings(), topology=self.topology(), **overrides)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("NATS connection (flags override CONVEYOR_* variables)")
    # SUPPRESS: a flag given before the command must not be reset by the command's parser.
    group.add_argument(
        "--nats",
        default=argparse.SUPPRESS,
        metavar="URLS",
        help="NATS server, or a comma-separated seed list of a cluster "
        "($CONVEYOR_NATS_URL, default nats://127.0.0.1:4222)",
    )
    group.add_argument(
        "--namespace",
        default=argparse.SUPPRESS,
        help="isolate streams and subjects ($CONVEYOR_NAMESPACE, default conveyor)",
    )
    for flag, what in (
        ("user", "user name"),
        ("password", "password"),
        ("token", "token"),
        ("nkey-seed", "NKey seed file"),
        ("creds", ".creds file"),
        ("tls-ca", "CA certificate file"),
        ("tls-cert", "client certificate file (mTLS)"),
        ("tls-key", "client key file (mTLS)"),
    ):
        variable = "CONVEYOR_NATS_" + flag.upper().replace("-", "_")
        group.add_argument(
            f"--nats-{flag}",
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=f"NATS {what} (${variable})",
        )


def cli_actor() -> str:
    """Who runs this command, as recorded with the runs it starts (`user@host`)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


# A command tries each server of the seed list once and reports a refused connection at once:
# a person is waiting, and retrying is theirs to decide. The long-running processes (worker,
# orchestrator, api, ...) keep the bus's default window of a few seconds, so one started beside
# its NATS server (compose, a pod restarted with it) does not exit while the server boots.
CLI_CONNECT_TIMEOUT_S = 0.0


@contextlib.asynccontextmanager
async def connected_client(connection: Connection) -> AsyncIterator[Client]:
    async with connected_bus(connection, name="conveyor-client") as bus:
        yield Client(bus, source=CLI_SOURCE, actor=cli_actor())


@contextlib.asynccontextmanager
async def connected_bus(
    connection: Connection,
    name: str = "conveyor-cli",
    connect_timeout_s: float = CLI_CONNECT_TIMEOUT_S,
) -> AsyncIterator[Bus]:
    bus = await Bus.connect(
        connection.settings(),
        connection.topology(),
        name=name,
        connect_timeout_s=connect_timeout_s,
    )
    try:
        yield bus
    finally:
        await bus.close()


async def existing_run(client: Client, run_id: str) -> dict[str, Any]:
    """The run's status, or a usage error (exit 2) naming the run."""
    status = await client.status(run_id)
    if status is None:
        raise UsageError(f"no run {run_id!r} (unknown, or not yet applied)")
    return status


def json_value(text: str, flag: str) -> Any:
    """`text` as JSON (`@file.json` reads a file); a usage error naming `flag` otherwise."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"{flag}: cannot read {text[1:]!r}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc}") from None


def json_object(text: str | None, flag: str = "--input") -> dict[str, Any]:
    if not text:
        return {}
    value = json_value(text, flag)
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value
