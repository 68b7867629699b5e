"""`conveyor config` (every setting in effect, where it came from, secrets masked) and
`conveyor completion bash|zsh` (a shell completion script made from the parser itself); and
`apply_defaults`, which gives every command's flags their defaults from the one settings model
(events.config): flags > CONVEYOR_* environment > conveyor.toml > built-in defaults."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from events.config import (
    SETTINGS,
    Environment,
    Resolved,
    Setting,
    SettingsError,
    environment,
    resolve,
)
from events.otel import configured as otel_configured
from events.settings import NatsSettings
from events.topology import Topology
from orchestrator.cli.common import EXIT_OK, EXIT_USAGE, typed
from orchestrator.cli.completion import SHELLS, commands_of, script

# OpenTelemetry is configured by its own standard variables, read by its SDK: shown, not set.
OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_SDK_DISABLED",
)


def apply_defaults(parser: argparse.ArgumentParser, env: Environment | None = None) -> None:
    """Each command's flags bound to a setting default to its value from the environment or
    the file (when set there; else the flag keeps its built-in default, which a test holds equal
    to the model's). SettingsError for a value that does not parse."""
    env = environment() if env is None else env
    values = {r.setting.key: r for r in resolve(env=env)}
    bound = settings_by_flag()
    for name, sub in commands_of(parser).items():
        sub.set_defaults(config_command=name)
        for action in sub._actions:
            setting = bound.get((name, action.dest))
            if setting is None or values[setting.key].source == "default":
                continue
            if isinstance(action, argparse._AppendAction):
                continue  # a default list would be extended by the flags: `fill_unset` sets it
            action.default = values[setting.key].value
            action.required = False  # the file or the environment gives it


def fill_unset(ns: argparse.Namespace, env: Environment | None = None) -> None:
    """After parsing: a repeatable flag not given takes the setting's value (`--queue`), and so
    do the options every command shares. Those are filled here, not with set_defaults: their
    actions are the same objects in every command's parser, so a default set on the top parser
    became the command parser's too and reset a flag given before the command
    (`conveyor --log-level debug runs`)."""
    if not hasattr(ns, "log_json"):
        ns.log_json = False
    if not hasattr(ns, "log_level"):
        env = environment() if env is None else env
        ns.log_level = next(r.value for r in resolve(env=env) if r.setting.key == "log.level")
    command = getattr(ns, "config_command", None)
    for setting in SETTINGS:
        for bound_command, dest in setting.flags:
            if bound_command != command or getattr(ns, dest, None) is not None:
                continue
            if hasattr(ns, dest) and setting.kind is list:
                env = environment() if env is None else env
                value = next(r.value for r in resolve(env=env) if r.setting is setting)
                setattr(ns, dest, value)


# ---- conveyor config -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigArgs:
    json: bool


def _given(ns: argparse.Namespace) -> dict[str, Any]:
    """Settings given as flags to this command (the shared ones: connection and logging)."""
    values = vars(ns)
    given: dict[str, Any] = {}
    for setting in SETTINGS:
        for command, dest in setting.flags:
            if command == "*" and values.get(dest) is not None and dest != "log_level":
                value = values[dest]
                given[setting.key] = value.split(",") if setting.kind is list else value
    return given


def _shown(resolved: Resolved) -> Any:
    value = resolved.shown
    if resolved.setting.key == "nats.url" and isinstance(value, list):
        return [_without_password(url) for url in value]
    return value


def _without_password(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}{port}"))


def _otel() -> dict[str, str]:
    out = {}
    for name in OTEL_VARIABLES:
        if name in os.environ:
            value = os.environ[name]
            out[name] = "***" if name.endswith("HEADERS") and value else value
    return out


def _problems(env: Environment) -> list[str]:
    """Settings that are each valid but cannot work together (user without password...)."""
    problems = []
    for build in (lambda: NatsSettings.from_env(env), lambda: Topology.from_env(env=env)):
        try:
            build()
        except (SettingsError, ValueError) as exc:
            problems.append(str(exc))
    return problems


async def cmd_config(ns: argparse.Namespace) -> int:
    args = typed(ConfigArgs, ns)
    env = environment()
    rows = resolve(_given(ns), env)
    problems = _problems(env)
    where = str(env.file.path) if env.file else None
    if args.json:
        print(
            json.dumps(
                {
                    "file": where,
                    "settings": [
                        {
                            "key": r.setting.key,
                            "value": _shown(r),
                            "source": r.source,
                            "env": r.setting.env,
                        }
                        for r in rows
                    ],
                    "otel": {"export": otel_configured(), "environment": _otel()},
                    "problems": problems,
                }
            )
        )
        return EXIT_USAGE if problems else EXIT_OK
    print(
        f"configuration file: {where or 'none (conveyor.toml, [tool.conveyor], $CONVEYOR_CONFIG)'}"
    )
    _table(rows)
    state = "on" if otel_configured() else "off (no OTEL_EXPORTER_OTLP_ENDPOINT)"
    print(f"\nOpenTelemetry export: {state}")
    for name, value in _otel().items():
        print(f"  {name}={value}")
    for problem in problems:
        print(f"problem: {problem}")
    return EXIT_USAGE if problems else EXIT_OK


def _table(rows: list[Resolved]) -> None:
    cells = [(r.setting.key, _text(_shown(r)), r.source, r.setting.env) for r in rows]
    widths = [
        max(len(c[i]) for c in [("setting", "value", "source", "variable"), *cells])
        for i in range(4)
    ]
    for row in [("setting", "value", "source", "variable"), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


# ---- conveyor completion ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompletionArgs:
    shell: str


def cmd_completion_for(parser: argparse.ArgumentParser) -> Any:
    async def cmd_completion(ns: argparse.Namespace) -> int:
        print(script(parser, typed(CompletionArgs, ns).shell))
        return EXIT_OK

    return cmd_completion


def register(
    sub: Any, parents: list[argparse.ArgumentParser], root: argparse.ArgumentParser
) -> None:
    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            parents=parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return p

    p = command(
        "config",
        "show every setting in effect and where it comes from (secrets masked)",
        "CONVEYOR_NATS_URL=nats://n1:4222 conveyor config --json",
    )
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(handler=cmd_config)

    p = command(
        "completion",
        "print a shell completion script (bash or zsh)",
        "conveyor completion bash > ~/.local/share/bash-completion/completions/conveyor\n"
        '  eval "$(conveyor completion zsh)"   # in ~/.zshrc (or bash in ~/.bashrc)',
    )
    p.add_argument("shell", choices=SHELLS, help="the shell")
    p.set_defaults(handler=cmd_completion_for(root))


def settings_by_flag() -> dict[tuple[str, str], Setting]:
    return {(command, dest): s for s in SETTINGS for command, dest in s.flags}
