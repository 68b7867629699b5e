"""Conveyor's one settings model: every setting, where it is read from, and which wins.

    flags > CONVEYOR_* environment > conveyor.toml ([tool.conveyor] in pyproject.toml) > defaults

`SETTINGS` names each setting once: its key in the file (`nats.url`), its environment variable
(`CONVEYOR_NATS_URL`), its type, its default, whether it is a secret, and the command-line
flags bound to it (docs/operations.md says what each one does). The file is found in the current
directory (`conveyor.toml`, else a `pyproject.toml` with a `[tool.conveyor]` table) or named by
`CONVEYOR_CONFIG`:

    [nats]
    url = ["nats://n1:4222", "nats://n2:4222"]
    creds = "/etc/conveyor/app.creds"

    [worker]
    concurrency = 32

`environment()` is what the readers of settings (`NatsSettings.from_env`, `Topology.from_env`,
`roles.Common.from_env`, the CLI's flag defaults) read instead of `os.environ`: the file's values
under their variables' names, with the real environment laid over them. `resolve()` gives each
setting's value and where it came from, for `conveyor config`. A file that cannot be read, an
unknown key, a value of the wrong type: a `ConfigFileError` naming the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.errors import ConveyorError

CONFIG_VARIABLE = "CONVEYOR_CONFIG"
FILE_NAME = "conveyor.toml"


class SettingsError(ConveyorError):
    """A setting that cannot work; says which setting and why."""


class ConfigFileError(SettingsError, ValueError):
    """The configuration file cannot be read, or holds what no setting takes."""


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # "<section>.<name>", or "<name>" at the top of the file
    env: str
    kind: type  # str, int, float, bool, or list (of strings)
    default: Any
    secret: bool = False
    # The CLI flags bound to it: (command, dest); command "*" is every command.
    flags: tuple[tuple[str, str], ...] = ()


def _flag(key: str, env: str, kind: type, default: Any, flag: str, secret: bool = False) -> Setting:
    """A setting with a flag: `flag` is "<command>.<dest>" ("*.<dest>": every command's)."""
    command, dest = flag.split(".")
    return Setting(key, env, kind, default, secret, ((command, dest),))


def _nats(name: str, secret: bool = False) -> Setting:
    return _flag(
        f"nats.{name}", f"CONVEYOR_NATS_{name.upper()}", str, None, f"*.nats_{name}", secret
    )


_HOME = ".conveyor"
SETTINGS: tuple[Setting, ...] = (
    _flag("nats.url", "CONVEYOR_NATS_URL", list, ["nats://127.0.0.1:4222"], "*.nats"),
    _nats("user"),
    _nats("password", secret=True),
    _nats("token", secret=True),
    _nats("nkey_seed"),
    _nats("creds"),
    _nats("tls_ca"),
    _nats("tls_cert"),
    _nats("tls_key"),
    Setting("nats.ping_interval", "CONVEYOR_NATS_PING_INTERVAL", float, 5.0),
    _flag("namespace", "CONVEYOR_NAMESPACE", str, "conveyor", "*.namespace"),
    Setting("topology.partitions", "CONVEYOR_PARTITIONS", int, 1),
    Setting("topology.replicas", "CONVEYOR_REPLICAS", int, 1),
    Setting("topology.task_ack_wait", "CONVEYOR_TASK_ACK_WAIT", float, 30.0),
    Setting("topology.task_max_deliveries", "CONVEYOR_TASK_MAX_DELIVERIES", int, 5),
    Setting("topology.worker_heartbeat", "CONVEYOR_WORKER_HEARTBEAT", float, 5.0),
    Setting("startup_timeout", "CONVEYOR_STARTUP_TIMEOUT", float, 30.0),
    _flag("log.level", "CONVEYOR_LOG_LEVEL", str, "warning", "*.log_level"),
    Setting("event_loop", "CONVEYOR_EVENT_LOOP", str, "uvloop"),
    _flag(
        "orchestrator.db",
        "CONVEYOR_ORCHESTRATOR_DB",
        str,
        f"{_HOME}/conveyor.db",
        "orchestrator.db",
    ),
    _flag("orchestrator.partition", "CONVEYOR_PARTITION", int, 0, "orchestrator.partition"),
    _flag("orchestrator.topology", "CONVEYOR_TOPOLOGY", str, "auto", "orchestrator.topology"),
    # Lease mode (docs/failover.md): replicas share the partitions through leases.
    _flag("orchestrator.lease", "CONVEYOR_ORCHESTRATOR_LEASE", bool, False, "orchestrator.lease"),
    _flag("orchestrator.replica_id", "CONVEYOR_REPLICA_ID", str, None, "orchestrator.replica_id"),
    _flag("orchestrator.state_dir", "CONVEYOR_STATE_DIR", str, None, "orchestrator.state_dir"),
    _flag(
        "orchestrator.lease_seconds",
        "CONVEYOR_LEASE_SECONDS",
        float,
        5.0,
        "orchestrator.lease_seconds",
    ),
    _flag(
        "orchestrator.snapshot_interval",
        "CONVEYOR_SNAPSHOT_INTERVAL",
        float,
        30.0,
        "orchestrator.snapshot_interval",
    ),
    _flag(
        "orchestrator.rejoin_timeout",
        "CONVEYOR_REJOIN_TIMEOUT",
        float,
        30.0,
        "orchestrator.rejoin_timeout",
    ),
    _flag(
        "orchestrator.metrics_port",
        "CONVEYOR_ORCHESTRATOR_METRICS_PORT",
        int,
        None,
        "orchestrator.metrics_port",
    ),
    _flag("worker.concurrency", "CONVEYOR_WORKER_CONCURRENCY", int, 16, "worker.concurrency"),
    _flag("worker.queues", "CONVEYOR_WORKER_QUEUES", list, None, "worker.queue"),
    _flag("worker.grace", "CONVEYOR_WORKER_GRACE", float, 30.0, "worker.grace"),
    _flag("worker.metrics_port", "CONVEYOR_WORKER_METRICS_PORT", int, None, "worker.metrics_port"),
    _flag("api.host", "CONVEYOR_API_HOST", str, "127.0.0.1", "api.host"),
    _flag("api.port", "CONVEYOR_API_PORT", int, 8080, "api.port"),
    _flag("api.token", "CONVEYOR_API_TOKEN", str, None, "api.token", secret=True),
    _flag("api.db", "CONVEYOR_API_DB", str, f"{_HOME}/projection.db", "api.db"),
    _flag("webhooks.hooks", "CONVEYOR_WEBHOOKS_FILE", str, None, "webhooks.hooks"),
    _flag("webhooks.host", "CONVEYOR_WEBHOOKS_HOST", str, "127.0.0.1", "webhooks.host"),
    _flag("webhooks.port", "CONVEYOR_WEBHOOKS_PORT", int, 8090, "webhooks.port"),
    _flag("dev.home", "CONVEYOR_HOME", str, _HOME, "dev.home"),
)
BY_KEY = {s.key: s for s in SETTINGS}
BY_ENV = {s.env: s for s in SETTINGS}


# ---- the file --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigFile:
    path: Path
    values: dict[str, Any]  # key -> value as written (typed: checked)


def find_file(env: Mapping[str, str], cwd: Path | None = None) -> Path | None:
    """`$CONVEYOR_CONFIG`, else conveyor.toml, else a pyproject.toml with [tool.conveyor], in
    `cwd` (default: the current directory)."""
    named = env.get(CONFIG_VARIABLE, "").strip()
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigFileError(f"{CONFIG_VARIABLE}={named!r}: no such file")
        return path
    here = cwd or Path.cwd()
    if (here / FILE_NAME).is_file():
        return here / FILE_NAME
    pyproject = here / "pyproject.toml"
    if pyproject.is_file() and "tool" in (doc := _toml(pyproject)) and "conveyor" in doc["tool"]:
        return pyproject
    return None


def read_file(path: Path) -> ConfigFile:
    doc = _toml(path)
    if path.name == "pyproject.toml":
        doc = doc.get("tool", {}).get("conveyor", {})
    values: dict[str, Any] = {}
    for key, value in _flatten(doc):
        setting = BY_KEY.get(key)
        if setting is None:
            raise ConfigFileError(
                f"{path}: unknown setting {key!r} (`conveyor config` lists every setting)"
            )
        values[key] = _checked(setting, value, f"{path}: {key}")
    return ConfigFile(path, values)


def _toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in doc.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{key}.")
        else:
            yield key, value


# ---- values ----------------------------------------------------------------------------------


def _checked(setting: Setting, value: Any, where: str) -> Any:
    """A value from the file, of the setting's type (TOML has types: no parsing)."""
    kind = setting.kind
    if kind is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigFileError(f"{where} must be a string or a list of strings")
        return [i.strip() for i in items if i.strip()]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigFileError(f"{where} must be {_article(kind)}, got {value!r}")
    return value


def parse(setting: Setting, text: str, where: str) -> Any:
    """A value from the environment (text), of the setting's type."""
    if setting.kind is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    if setting.kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise SettingsError(f"{where}={text!r} is not true or false")
        return lowered in ("1", "true", "yes", "on")
    if setting.kind in (int, float):
        try:
            return setting.kind(text)
        except ValueError:
            raise SettingsError(f"{where}={text!r} is not {_article(setting.kind)}") from None
    return text


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _article(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, kind.__name__
    )


# ---- layered ---------------------------------------------------------------------------------


class Environment(Mapping[str, str]):
    """The process environment over the configuration file's values (under their variables'
    names): what settings are read from. `origin(variable)` says where a value came from."""

    def __init__(self, env: Mapping[str, str], file: ConfigFile | None) -> None:
        self.env = env
        self.file = file
        self._from_file = {
            BY_KEY[key].env: _as_text(value) for key, value in (file.values if file else {}).items()
        }

    def __getitem__(self, name: str) -> str:
        if name in self.env:
            return self.env[name]
        return self._from_file[name]

    def __iter__(self) -> Iterator[str]:
        yield from self.env
        yield from (k for k in self._from_file if k not in self.env)

    def __len__(self) -> int:
        return len(set(self.env) | set(self._from_file))

    def origin(self, name: str) -> str | None:
        if name in self.env:
            return "env"
        if name in self._from_file and self.file is not None:
            return f"file {self.file.path}"
        return None


def environment(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Environment:
    """The environment (default: the process's) over the configuration file, if there is one."""
    env = os.environ if env is None else env
    path = find_file(env, cwd)
    return Environment(env, read_file(path) if path is not None else None)


@dataclass(frozen=True, slots=True)
class Resolved:
    setting: Setting
    value: Any
    source: str  # "flag", "env", "file <path>", "default"

    @property
    def shown(self) -> Any:
        """The value as `conveyor config` may show it: secrets masked."""
        if self.setting.secret and self.value is not None:
            return "***"
        return self.value


def resolve(
    flags: Mapping[str, Any] | None = None, env: Environment | None = None
) -> list[Resolved]:
    """Every setting with its value and source. `flags`: setting key -> value given on the
    command line (None: not given)."""
    env = environment() if env is None else env
    out = []
    for setting in SETTINGS:
        flag = (flags or {}).get(setting.key)
        if flag is not None:
            out.append(Resolved(setting, flag, "flag"))
            continue
        origin = env.origin(setting.env)
        if origin is None:
            out.append(Resolved(setting, setting.default, "default"))
        else:
            value = parse(setting, env[setting.env], setting.env)
            out.append(Resolved(setting, value, origin))
    return out


def value_of(key: str, env: Environment) -> Any:
    """One setting's value from `env` (the file and the environment), else its default."""
    setting = BY_KEY[key]
    if env.origin(setting.env) is None:
        return setting.default
    return parse(setting, env[setting.env], setting.env)
