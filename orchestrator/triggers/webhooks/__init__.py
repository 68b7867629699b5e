"""Webhooks in and out: the gateway (HTTP -> CloudEvents) and the outbound notifier."""

from orchestrator.triggers.webhooks.config import Hook, HookAuth, HooksConfig, load_hooks
from orchestrator.triggers.webhooks.gateway import create_gateway

__all__ = ["Hook", "HookAuth", "HooksConfig", "create_gateway", "load_hooks"]
