"""The control plane: workflow specs and the Python DSL, the pure machine, the store, the engine."""

from orchestrator.core.compiler import CompiledSpec, compile_spec, validate_spec
from orchestrator.core.machine import advance, start_run
from orchestrator.core.rules import backoff_delay
from orchestrator.core.spec import Condition, MapSpec, NodeSpec, RetryPolicy, WorkflowSpec
from orchestrator.core.state import NodeState, RunState, Transition
from orchestrator.core.status import run_status
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
from orchestrator.errors import (
    EventRejected,
    InvalidInput,
    SpecError,
    StoreError,
    UnknownWorkflow,
    WorkflowDefinitionError,
)
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.service import ApiService
from orchestrator.runtime.store import Store

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
