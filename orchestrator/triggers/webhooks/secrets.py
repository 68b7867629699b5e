"""Secrets named in configuration, resolved in one place.

A secret is given as `env:NAME` (read from the environment, so it never sits in a file, a spec
or a log) or, for development, as the literal value. A secret that is named but missing or
empty is an error that says which variable and where it was asked for — never a silent
fallback: a webhook that should be signed is not sent unsigned, and a gateway that should check
signatures does not accept unsigned deliveries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from orchestrator.errors import ConfigError

ENV_PREFIX = "env:"


def resolve_secret(value: str, where: str, env: Mapping[str, str] | None = None) -> str:
    """The secret `value` stands for; ConfigError naming `where` when it cannot be had."""
    if not value.startswith(ENV_PREFIX):
        if not value:
            raise ConfigError(f"{where}: the secret is empty")
        return value
    name = value[len(ENV_PREFIX) :]
    if not name:
        raise ConfigError(f"{where}: 'env:' names no environment variable")
    found = (os.environ if env is None else env).get(name)
    if not found:
        state = "is empty" if found == "" else "is not set"
        raise ConfigError(f"{where}: environment variable {name} {state}")
    return found
