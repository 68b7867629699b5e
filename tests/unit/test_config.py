"""One settings model (events.config): flags > CONVEYOR_* environment > conveyor.toml (or
[tool.conveyor] in pyproject.toml) > defaults — as the readers of settings, the CLI's flags and
`conveyor config` see it. Real files in a temp directory, the real parser (the `conveyor config`
command itself: tests/e2e/test_config_command.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from events.config import (
    ConfigFileError,
    SettingsError,
    environment,
    resolve,
)
from events.settings import NatsSettings
from events.topology import Topology
from orchestrator.cli.config import apply_defaults, fill_unset, settings_by_flag
from orchestrator.cli.main import build_parser, parse_args
from orchestrator.roles import Common
from orchestrator.runtime import loop

CONFIG = """
namespace = "fromfile"
startup_timeout = 12

[nats]
url = ["nats://file-a:4222", "nats://file-b:4222"]
user = "filer"
password = "file-secret"

[topology]
replicas = 3

[worker]
concurrency = 32
queues = ["gpu", "default"]

[api]
token = "api-secret"
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean current directory and no CONVEYOR_* / OTEL_* variables of the machine."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("CONVEYOR_", "OTEL_")):
            monkeypatch.delenv(name)
    return tmp_path


def _sources(env: dict[str, str] | None = None, **flags: Any) -> dict[str, tuple[Any, str]]:
    return {r.setting.key: (r.value, r.source) for r in resolve(flags, environment(env or {}))}


def test_defaults_when_nothing_is_set(here: Path) -> None:
    got = _sources()
    assert got["nats.url"] == (["nats://127.0.0.1:4222"], "default")
    assert got["worker.concurrency"] == (16, "default")
    assert NatsSettings.from_env({}) == NatsSettings()
    assert Topology.from_env(env={}) == Topology()


def test_file_over_defaults_env_over_file_flags_over_env(here: Path) -> None:
    (here / "conveyor.toml").write_text(CONFIG)
    file = f"file {here / 'conveyor.toml'}"
    got = _sources()
    assert got["nats.url"] == (["nats://file-a:4222", "nats://file-b:4222"], file)
    assert got["worker.concurrency"] == (32, file)
    assert got["api.port"] == (8080, "default")

    env = {"CONVEYOR_WORKER_CONCURRENCY": "64", "CONVEYOR_NATS_URL": "nats://env:4222"}
    got = _sources(env)
    assert got["worker.concurrency"] == (64, "env")
    assert got["nats.url"] == (["nats://env:4222"], "env")
    assert got["namespace"] == ("fromfile", file)

    got = _sources(env, **{"nats.url": ["nats://flag:4222"], "namespace": "flagged"})
    assert got["nats.url"] == (["nats://flag:4222"], "flag")
    assert got["namespace"] == ("flagged", "flag")
    assert got["worker.concurrency"] == (64, "env")


def test_the_readers_of_settings_read_the_file(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (here / "conveyor.toml").write_text(CONFIG)
    nats = NatsSettings.from_env()
    assert nats.servers == ("nats://file-a:4222", "nats://file-b:4222")
    assert (nats.user, nats.password) == ("filer", "file-secret")
    assert Topology.from_env() == Topology(namespace="fromfile", replicas=3)
    common = Common.from_env()
    assert common.startup_timeout_s == 12.0 and common.topology.namespace == "fromfile"
    monkeypatch.setenv("CONVEYOR_NAMESPACE", "fromenv")
    monkeypatch.setenv("CONVEYOR_NATS_URL", "nats://env:4222")
    assert Topology.from_env().namespace == "fromenv"
    assert NatsSettings.from_env().servers == ("nats://env:4222",)
    # A flag wins over both.
    assert NatsSettings.from_env(servers="nats://flag:4222").servers == ("nats://flag:4222",)
    assert Topology.from_env("flagged").namespace == "flagged"


def test_the_event_loop_is_a_setting_too(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert loop.loop_name() == "uvloop"  # the default where uvloop is installed (a dependency)
    (here / "conveyor.toml").write_text('event_loop = "asyncio"\n')
    assert loop.loop_name() == "asyncio"
    assert _sources()["event_loop"] == ("asyncio", f"file {here / 'conveyor.toml'}")
    monkeypatch.setenv("CONVEYOR_EVENT_LOOP", "uvloop")
    assert loop.loop_name() == "uvloop"


def test_every_commands_flags_default_from_the_model(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "conveyor.toml").write_text(CONFIG + '\n[orchestrator]\ndb = "/var/p0.db"\n')
    parser = build_parser()
    args = parser.parse_args(["worker", "flows.py"])
    fill_unset(args)
    assert (args.concurrency, args.queue) == (32, ["gpu", "default"])
    args = parser.parse_args(["worker", "flows.py", "--concurrency", "8", "--queue", "cpu"])
    fill_unset(args)
    assert (args.concurrency, args.queue) == (8, ["cpu"])  # flags replace, never extend
    assert parser.parse_args(["orchestrator"]).db == "/var/p0.db"
    monkeypatch.setenv("CONVEYOR_WORKER_CONCURRENCY", "48")
    monkeypatch.setenv("CONVEYOR_LOG_LEVEL", "info")
    args = parse_args(["worker", "flows.py"])
    assert (args.concurrency, args.log_level) == (48, "info")
    assert parse_args(["worker", "m.py", "--log-level", "debug"]).log_level == "debug"
    assert parse_args(["--log-level", "debug", "worker", "m.py"]).log_level == "debug"
    # A required flag the file gives need not be typed.
    (here / "conveyor.toml").write_text('[webhooks]\nhooks = "hooks.yaml"\n')
    assert build_parser().parse_args(["webhooks"]).hooks == "hooks.yaml"


def test_the_models_defaults_are_the_flags_defaults(here: Path) -> None:
    """`source: default` must be true: each flag's own default is the model's."""
    parser = build_parser()
    commands = {a.dest: a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"}
    subs = next(iter(commands.values())).choices
    checked = 0
    for (command, dest), setting in settings_by_flag().items():
        if command == "*":
            continue
        action = next(a for a in subs[command]._actions if a.dest == dest)
        assert action.default == setting.default, (command, dest)
        checked += 1
    assert checked >= 12


def test_pyproject_tool_conveyor_and_conveyor_config(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.conveyor]\nnamespace = "py"\n'
    )
    assert Topology.from_env().namespace == "py"
    (here / "conveyor.toml").write_text('namespace = "toml"\n')
    assert Topology.from_env().namespace == "toml"  # conveyor.toml first
    elsewhere = here / "conf" / "prod.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text('namespace = "named"\n')
    monkeypatch.setenv("CONVEYOR_CONFIG", str(elsewhere))
    assert Topology.from_env().namespace == "named"
    monkeypatch.setenv("CONVEYOR_CONFIG", str(here / "missing.toml"))
    with pytest.raises(ConfigFileError, match=r"CONVEYOR_CONFIG=.*missing.toml.*no such file"):
        environment()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nats]\nurll = 'x'\n", r"unknown setting 'nats.urll'"),
        ("[worker]\nconcurrency = 'many'\n", r"worker.concurrency must be an integer"),
        ("[worker]\nconcurrency = true\n", r"worker.concurrency must be an integer"),
        ("[nats]\nurl = [1, 2]\n", r"nats.url must be a string or a list of strings"),
        ("namespace = \n", r"not valid TOML"),
    ],
)
def test_a_bad_file_says_what_and_where(here: Path, text: str, message: str) -> None:
    (here / "conveyor.toml").write_text(text)
    with pytest.raises(ConfigFileError, match=message) as caught:
        environment()
    assert str(here / "conveyor.toml") in str(caught.value)


def test_a_bad_variable_says_which(here: Path) -> None:
    with pytest.raises(SettingsError, match=r"CONVEYOR_WORKER_CONCURRENCY='x' is not an integer"):
        resolve(env=environment({"CONVEYOR_WORKER_CONCURRENCY": "x"}))
    with pytest.raises(SettingsError):
        apply_defaults(build_parser(), environment({"CONVEYOR_API_PORT": "eighty"}))


def test_the_api_token_comes_from_the_file_or_the_environment(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_args(["api"]).token is None  # `conveyor api` then asks for one, or --dev
    (here / "conveyor.toml").write_text(CONFIG)
    assert parse_args(["api"]).token == "api-secret"
    monkeypatch.setenv("CONVEYOR_API_TOKEN", "env-secret")
    assert parse_args(["api"]).token == "env-secret"
    assert parse_args(["api", "--token", "flag-secret"]).token == "flag-secret"


def test_lease_mode_is_configured_like_everything_else(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = parse_args(["orchestrator"])
    assert (args.lease, args.lease_seconds, args.state_dir) == (False, 5.0, None)
    (here / "conveyor.toml").write_text(
        '[orchestrator]\nlease = true\nlease_seconds = 2\nstate_dir = "/var/cache/conveyor"\n'
    )
    args = parse_args(["orchestrator"])
    assert (args.lease, args.lease_seconds, args.state_dir) == (True, 2.0, "/var/cache/conveyor")
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "3")
    assert parse_args(["orchestrator"]).lease_seconds == 3.0
    assert parse_args(["orchestrator", "--lease-seconds", "4"]).lease_seconds == 4.0
    monkeypatch.setenv("CONVEYOR_ORCHESTRATOR_LEASE", "maybe")
    with pytest.raises(SettingsError, match="CONVEYOR_ORCHESTRATOR_LEASE='maybe'"):
        parse_args(["orchestrator"])
