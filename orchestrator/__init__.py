"""The control plane: workflow specs and the Python DSL, the pure machine, the store, the engine."""

from orchestrator.dsl import (
    Cond,
    Ref,
    Workflow,
    sleep,
    subworkflow,
    wait_for_event,
    when,
    workflow,
)
from orchestrator.engine import Engine
from orchestrator.errors import (
    EventRejected,
    InvalidInput,
    SpecError,
    StoreError,
    UnknownWorkflow,
    WorkflowDefinitionError,
)
from orchestrator.machine import advance, start_run
from orchestrator.registry import Registry
from orchestrator.rules import backoff_delay
from orchestrator.service import ApiService
from orchestrator.spec import (
    CompiledSpec,
    Condition,
    MapSpec,
    NodeSpec,
    RetryPolicy,
    WorkflowSpec,
    compile_spec,
    validate_spec,
)
from orchestrator.state import NodeState, RunState, Transition
from orchestrator.status import run_status
from orchestrator.store import Store

__all__ = [
    "ApiService",
    "CompiledSpec",
    "Cond",
    "Condition",
    "Engine",
    "EventRejected",
    "InvalidInput",
    "MapSpec",
    "NodeSpec",
    "NodeState",
    "Ref",
    "Registry",
    "RetryPolicy",
    "RunState",
    "SpecError",
    "Store",
    "StoreError",
    "Transition",
    "UnknownWorkflow",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowSpec",
    "advance",
    "backoff_delay",
    "compile_spec",
    "run_status",
    "sleep",
    "start_run",
    "subworkflow",
    "validate_spec",
    "wait_for_event",
    "when",
    "workflow",
]
