"""The Python DSL: `@workflow` traces a function into a `WorkflowSpec` (see `workflow.py`).

refs.py      Ref, Cond: the symbolic values a traced body handles; values -> spec templates
tracer.py    the tracer: task calls bound and recorded as nodes, task options as node fields
nodes.py     when(), sleep(), wait_for_event(), subworkflow()
workflow.py  Workflow and @workflow: a function traced into a spec
loader.py    a user module (file or dotted name) loaded, its workflows and tasks collected
"""

from orchestrator.dsl.nodes import sleep, subworkflow, wait_for_event, when
from orchestrator.dsl.refs import Cond, Ref
from orchestrator.dsl.workflow import Workflow, workflow

__all__ = ["Cond", "Ref", "Workflow", "sleep", "subworkflow", "wait_for_event", "when", "workflow"]
