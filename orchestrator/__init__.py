"""Conveyor's control plane. What users import from here:

    from orchestrator import workflow, when, sleep, wait_for_event, subworkflow   # the DSL
    from orchestrator import Client                                            # trigger, wait

and the errors those raise. Everything else (the core, the runtime, the triggers, the HTTP API,
the CLI) lives in sub-packages and may move between releases.

Importing the DSL loads no networking: `Client` (which needs nats-py) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from events.errors import BusError, BusUnavailable, ConveyorError
from orchestrator.dsl import Workflow, sleep, subworkflow, wait_for_event, when, workflow
from orchestrator.errors import (
    InvalidInput,
    SpecError,
    UnknownWorkflow,
    WorkflowDefinitionError,
)

if TYPE_CHECKING:
    from orchestrator.client import Client

__all__ = [
    "BusError",
    "BusUnavailable",
    "Client",
    "ConveyorError",
    "InvalidInput",
    "SpecError",
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
    # PEP 562: the client (and with it nats-py) only when someone asks for it.
    if name == "Client":
        from orchestrator.client import Client

        return Client
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
