"""The Python DSL: `@workflow` traces a function into a `WorkflowSpec` (see `workflow.py`)."""

from orchestrator.dsl.workflow import (
    Cond,
    Ref,
    Workflow,
    sleep,
    subworkflow,
    wait_for_event,
    when,
    workflow,
)

__all__ = ["Cond", "Ref", "Workflow", "sleep", "subworkflow", "wait_for_event", "when", "workflow"]
