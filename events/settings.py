"""How a process reaches NATS: the servers to try and the credentials to present.

Read from flags, `CONVEYOR_NATS_*` environment variables and the configuration file, in that
order (`events.config`: the `[nats]` table of conveyor.toml). Every component —
orchestrator, workers, API, gateway, CLI — connects through these settings, so a cluster's seed
list, NATS user/password, token, NKey seed, `.creds` file and TLS (CA, client certificate and
key for mTLS) work the same everywhere.

    CONVEYOR_NATS_URL        nats://a:4222,nats://b:4222   (a comma-separated seed list)
    CONVEYOR_NATS_USER / CONVEYOR_NATS_PASSWORD
    CONVEYOR_NATS_TOKEN
    CONVEYOR_NATS_NKEY_SEED  path to a file holding an NKey seed (SU...)
    CONVEYOR_NATS_CREDS      path to a .creds file (JWT + NKey seed)
    CONVEYOR_NATS_TLS_CA / CONVEYOR_NATS_TLS_CERT / CONVEYOR_NATS_TLS_KEY   paths
    CONVEYOR_NATS_PING_INTERVAL  seconds between pings (default 5): a server that stops
                             answering (frozen, its machine gone without a word) is left for
                             another of the cluster once two pings go unanswered (10-15 s)

Secrets never leave this object in clear: `redacted()` is what logs and `conveyor config` show.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from events.config import SettingsError, environment

__all__ = ["DEFAULT_URL", "NatsSettings", "SettingsError", "split_servers"]

DEFAULT_URL = "nats://127.0.0.1:4222"
_ENV = {
    "servers": "CONVEYOR_NATS_URL",
    "user": "CONVEYOR_NATS_USER",
    "password": "CONVEYOR_NATS_PASSWORD",
    "token": "CONVEYOR_NATS_TOKEN",
    "nkey_seed": "CONVEYOR_NATS_NKEY_SEED",
    "creds": "CONVEYOR_NATS_CREDS",
    "tls_ca": "CONVEYOR_NATS_TLS_CA",
    "tls_cert": "CONVEYOR_NATS_TLS_CERT",
    "tls_key": "CONVEYOR_NATS_TLS_KEY",
}
PING_VARIABLE = "CONVEYOR_NATS_PING_INTERVAL"
# nats-py's defaults (a ping every 120 s, two unanswered allowed) leave a client on a server
# that went silent without closing its sockets — SIGSTOP, a machine powered off, a network cut
# — for four to six minutes: every request of it times out meanwhile. Five seconds, two
# unanswered: it moves to another server of the seed list within 10-15 s (shorter would risk
# leaving a server that is only slow to answer, on a machine starved of CPU).
DEFAULT_PING_INTERVAL_S = 5.0
_MAX_OUTSTANDING_PINGS = 2
_SECRETS = frozenset({"password", "token"})
_FILES = ("nkey_seed", "creds", "tls_ca", "tls_cert", "tls_key")
_SCHEMES = ("nats", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class NatsSettings:
    servers: tuple[str, ...] = (DEFAULT_URL,)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    nkey_seed: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    ping_interval_s: float = DEFAULT_PING_INTERVAL_S

    def __post_init__(self) -> None:
        if not 0 < self.ping_interval_s <= 600:
            raise SettingsError(
                f"{PING_VARIABLE} must be seconds from above 0 to 600, not {self.ping_interval_s:g}"
            )
        if not self.servers:
            raise SettingsError("no NATS server given (CONVEYOR_NATS_URL / --nats)")
        for url in self.servers:
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            if parts.scheme not in _SCHEMES or not parts.hostname:
                raise SettingsError(
                    f"NATS server {url!r} is not a URL like nats://host:4222 "
                    "(several: a comma-separated list)"
                )
        if (self.user is None) != (self.password is None):
            raise SettingsError("NATS user and password go together: give both or neither")
        ways = [
            name
            for name, given in (
                ("user/password", self.user is not None),
                ("token", self.token is not None),
                ("nkey seed", self.nkey_seed is not None),
                ("creds file", self.creds is not None),
            )
            if given
        ]
        if len(ways) > 1:
            raise SettingsError(f"give one way to authenticate to NATS, not {' and '.join(ways)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("a TLS client certificate and its key go together")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: str | None
    ) -> NatsSettings:
        """Settings from `env` (default: the process environment over the configuration
        file), then `overrides` (flags) where they are not None. `servers` may be given as one
        comma-separated string."""
        source = environment() if env is None else env
        values: dict[str, Any] = {}
        for name, variable in _ENV.items():
            value = overrides.get(name)
            if value is None:
                value = source.get(variable) or None
            if value is not None:
                values[name] = value
        unknown = set(overrides) - set(_ENV)
        if unknown:
            raise TypeError(f"unknown NATS settings: {', '.join(sorted(unknown))}")
        if "servers" in values:
            values["servers"] = split_servers(values["servers"])
        ping = source.get(PING_VARIABLE)
        if ping is not None and ping != "":
            try:
                values["ping_interval_s"] = float(ping)
            except ValueError:
                raise SettingsError(
                    f"{PING_VARIABLE} must be a number of seconds, not {ping!r}"
                ) from None
        return cls(**values)

    def with_servers(self, servers: str | tuple[str, ...]) -> NatsSettings:
        return replace(
            self, servers=split_servers(servers) if isinstance(servers, str) else servers
        )

    @property
    def url(self) -> str:
        """The seed list as one string (for messages and child processes' environment)."""
        return ",".join(self.servers)

    def redacted(self) -> dict[str, Any]:
        """Every setting, secrets masked: what logs and `conveyor config` may show."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS and value is not None:
                value = "***"
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def env(self) -> dict[str, str]:
        """The `CONVEYOR_NATS_*` variables that reproduce these settings (for child processes)."""
        out = {}
        for name, variable in _ENV.items():
            value = self.url if name == "servers" else getattr(self, name)
            if value is not None:
                out[variable] = value
        out[PING_VARIABLE] = f"{self.ping_interval_s:g}"
        return out

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for nats-py's `connect` (files are checked here, with their name,
        rather than failing later inside the client with a bare OSError)."""
        for name in _FILES:
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise SettingsError(f"{_ENV[name]}: no such file {path!r}")
        options: dict[str, Any] = {
            "servers": list(self.servers),
            "ping_interval": self.ping_interval_s,
            "max_outstanding_pings": _MAX_OUTSTANDING_PINGS,
        }
        if self.user is not None:
            options["user"], options["password"] = self.user, self.password
        if self.token is not None:
            options["token"] = self.token
        if self.nkey_seed is not None:
            options["nkeys_seed"] = self.nkey_seed
        if self.creds is not None:
            options["user_credentials"] = self.creds
        if self.tls_ca or self.tls_cert or any(u.startswith("tls://") for u in self.servers):
            options["tls"] = self._tls_context()
        return options

    def _tls_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert is not None and self.tls_key is not None:
                context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"cannot load the TLS files: {exc}") from exc
        return context


def split_servers(text: str) -> tuple[str, ...]:
    """`"nats://a:4222, nats://b:4222"` -> `("nats://a:4222", "nats://b:4222")`."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
