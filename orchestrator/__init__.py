"""Conveyor's control plane. What users import from here:

    from orchestrator import workflow, when, sleep, wait_for_event, subworkflow   # the DSL
    from orchestrator import Client         # async: trigger, wait, status, cancel, retry, ...
    from orchestrator import SyncClient     # the same, blocking: threads, Flask, Django

and the errors those raise. Everything else (the core, the runtime, the triggers, the HTTP API,
the CLI) lives in sub-packages and may move between releases.

Importing the DSL loads no networking: the clients (which need nats-py) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from events.errors import BusError, BusUnavailable, ConveyorError
from orchestrator.dsl import Workflow, sleep, subworkflow, wait_for_event, when, workflow
from orchestrator.errors import (
    InvalidInput,
    RunRefused,
    SpecError,
    UnknownRun,
    UnknownWorkflow,
    WorkflowDefinitionError,
)

if TYPE_CHECKING:
    from orchestrator.client import Client, Published
    from orchestrator.sync_client import SyncClient

__all__ = [
    "BusError",
    "BusUnavailable",
    "Client",
    "ConveyorError",
    "InvalidInput",
    "Published",
    "RunRefused",
    "SpecError",
    "SyncClient",
    "UnknownRun",
    "UnknownWorkflow",
    "Workflow",
    "WorkflowDefinitionError",
    "sleep",
    "subworkflow",
    "wait_for_event",
    "when",
    "workflow",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the clients (and with them nats-py) only when someone asks for them.
    if name in ("Client", "Published"):
        from orchestrator import client

        return getattr(client, name)
    if name == "SyncClient":
        from orchestrator.sync_client import SyncClient

        return SyncClient
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
