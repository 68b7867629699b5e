"""The tracer a `@workflow` body runs under: each task call (`extract(rows)`,
`train.map(lrs, data=data)`) is bound against the task's parameters and recorded as a node,
with the task's options (`retries`, `timeout`...) translated into the node's fields. It also
hands out node ids and holds the `when()` guard that applies to the nodes being recorded.

It is installed through `events.tasks.tracing`, so calling a task records a node instead of
running it; nothing global changes.
"""

from __future__ import annotations

import re
from typing import Any

from events.tasks import TaskDeclaration, current_tracer
from orchestrator.dsl.refs import Ref, to_template
from orchestrator.errors import WorkflowDefinitionError

# Task option -> field of the node's retry policy (`retries` is translated apart).
_RETRY_FIELDS = {
    "backoff": "backoff_s",
    "backoff_max": "backoff_max_s",
    "backoff_multiplier": "backoff_multiplier",
    "jitter": "jitter",
    "non_retryable": "non_retryable",
}
# Task option -> node field, as it is.
_NODE_FIELDS = {"timeout": "timeout_s", "schedule_to_start": "schedule_to_start_s"}
_OPTIONS = sorted({"retries", *_NODE_FIELDS, *_RETRY_FIELDS})


class WorkflowTracer:
    """Records the nodes of one workflow while its function runs with symbolic values."""

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.nodes: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        self.guards: list[dict[str, Any]] = []
        self.tasks: dict[str, TaskDeclaration] = {}

    def call(self, task: TaskDeclaration, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ref:
        return self._node(task, self._bind(task, args, kwargs), None)

    def map(
        self, task: TaskDeclaration, items: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Ref:
        if args:
            raise WorkflowDefinitionError(
                f"{task.name}.map(items, ...): pass the other arguments by keyword"
            )
        free = [p for p in task.params if p not in kwargs]
        if not free:
            raise WorkflowDefinitionError(
                f"{task.name}.map(): every parameter is given by keyword, so there is none left "
                "to map the items over"
            )
        inputs = self._bind(task, (), {**kwargs, free[0]: None})
        del inputs[free[0]]
        over = to_template(items, f"the items of {task.name}.map()")
        return self._node(task, inputs, {"over": over, "param": free[0]})

    def new_id(self, name: str, wanted: str | None = None) -> str:
        if wanted is not None:
            if wanted in self.ids:
                raise WorkflowDefinitionError(f"node id {wanted!r} is used twice")
            self.ids.add(wanted)
            return wanted
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name)
        if not re.match(r"[A-Za-z_]", base):
            base = f"_{base}"
        node_id, n = base, 1
        while node_id in self.ids:
            n += 1
            node_id = f"{base}_{n}"
        self.ids.add(node_id)
        return node_id

    def add(self, node: dict[str, Any]) -> Ref:
        if self.guards:
            node["when"] = self.guards[-1]
        self.nodes.append(node)
        return Ref("nodes", node["id"])

    def _bind(
        self, task: TaskDeclaration, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if len(args) > len(task.params):
            raise WorkflowDefinitionError(
                f"task {task.name!r} takes {len(task.params)} arguments, {len(args)} were given"
            )
        bound = dict(zip(task.params, args, strict=False))
        for name, value in kwargs.items():
            if name not in task.params:
                raise WorkflowDefinitionError(
                    f"task {task.name!r} has no parameter {name!r} "
                    f"(it has: {', '.join(task.params)})"
                )
            if name in bound:
                raise WorkflowDefinitionError(f"task {task.name!r}: {name!r} given twice")
            bound[name] = value
        missing = [p for p in task.required if p not in bound]
        if missing:
            raise WorkflowDefinitionError(
                f"task {task.name!r} is missing argument(s): {', '.join(missing)}"
            )
        return {k: to_template(v, f"argument {k!r} of {task.name!r}") for k, v in bound.items()}

    def _node(
        self, task: TaskDeclaration, inputs: dict[str, Any], mapping: dict[str, Any] | None
    ) -> Ref:
        node_id = self.new_id(task.name)
        self.tasks[task.name] = task
        node: dict[str, Any] = {
            "id": node_id,
            "task": task.name,
            "queue": task.queue,
            "inputs": inputs,
        }
        node.update(node_options(task, node_id))
        if mapping is not None:
            node["map"] = mapping
        return self.add(node)


def active_tracer(what: str) -> WorkflowTracer:
    """The tracer of the workflow being traced; `what` (e.g. "sleep") is used only outside one."""
    tracer = current_tracer()
    if not isinstance(tracer, WorkflowTracer):
        raise WorkflowDefinitionError(f"{what}() can only be used inside a @workflow function")
    return tracer


def node_options(task: TaskDeclaration, node_id: str) -> dict[str, Any]:
    """The node fields (`timeout_s`, `schedule_to_start_s`, `retry`) of the task's options."""
    out: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    for option, value in task.defaults.items():
        if option not in _OPTIONS:
            raise WorkflowDefinitionError(
                f"node {node_id!r}: unknown task option {option!r} (known: {', '.join(_OPTIONS)})"
            )
        if value is None:
            continue
        if option == "retries":
            retry["max_attempts"] = int(value) + 1
        elif option in _NODE_FIELDS:
            out[_NODE_FIELDS[option]] = value
        elif option == "non_retryable":
            retry["non_retryable"] = [v if isinstance(v, str) else v.__name__ for v in value]
        else:
            retry[_RETRY_FIELDS[option]] = value
    if retry:
        out["retry"] = retry
    return out
