"""Webhook gateway configuration: which hooks exist, what they produce, how they authenticate.

    # hooks.yaml
    hooks:
      orders:
        type: com.shop.order.created      # the CloudEvent type of a plain JSON body
        source: shop                      # its source
        auth: {kind: standard, secret: env:SHOP_WEBHOOK_SECRET}
      github:
        type: com.github.event
        auth: {kind: github, secret: env:GITHUB_WEBHOOK_SECRET}
      ci:
        auth: {kind: bearer, token: env:CI_HOOK_TOKEN}
        max_bytes: 65536

Secrets are read from the environment (`env:NAME`) so they never sit in a file or a log.
`kind: none` accepts unsigned deliveries (for development only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import ConfigError, SpecError
from orchestrator.triggers.webhooks.secrets import resolve_secret


class HookAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["github", "standard", "bearer", "none"]
    secret: str | None = None  # github, standard
    token: str | None = None  # bearer

    def resolved(self, value: str | None, hook: str) -> str:
        if value is None:
            raise SpecError(hook, [f"auth kind {self.kind!r} needs its secret/token"])
        try:
            return resolve_secret(value, f"the secret of hook {hook!r}")
        except ConfigError as exc:
            raise SpecError(hook, [str(exc)]) from None


class Hook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = "io.conveyor.webhook.received"
    source: str | None = None  # default: "webhook/<name>"
    auth: HookAuth
    max_bytes: int = Field(1024 * 1024, ge=1, le=16 * 1024 * 1024)


class HooksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hooks: dict[str, Hook] = Field(default_factory=dict)


def load_hooks(path: str | Path) -> HooksConfig:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        config = HooksConfig.model_validate(raw)
    except (yaml.YAMLError, OSError) as exc:
        raise SpecError(str(path), [f"cannot read the hooks file: {exc}"]) from None
    except ValidationError as exc:
        raise SpecError(
            str(path),
            [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()],
        ) from None
    for name, hook in config.hooks.items():  # fail at start-up, not at the first delivery
        if hook.auth.kind in ("github", "standard"):
            hook.auth.resolved(hook.auth.secret, name)
        elif hook.auth.kind == "bearer":
            hook.auth.resolved(hook.auth.token, name)
    return config
