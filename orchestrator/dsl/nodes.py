"""The nodes a `@workflow` body adds besides task calls: `when()` guards, durable sleeps, waits
for an event, and child workflows. Each records into the active tracer, so each works only while
a workflow is traced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from orchestrator.dsl.refs import Cond, Ref, to_template
from orchestrator.dsl.tracer import active_tracer
from orchestrator.dsl.workflow import Workflow
from orchestrator.errors import WorkflowDefinitionError


@contextlib.contextmanager
def when(condition: Ref | Cond) -> Iterator[None]:
    """Guard the task calls inside the block: they run only if `condition` holds at run time."""
    tracer = active_tracer("when")
    if isinstance(condition, Ref):
        guard = {"value": condition.expression, "op": "truthy"}
    elif isinstance(condition, Cond):
        guard = condition.spec()
    else:
        raise WorkflowDefinitionError(
            f"when() takes a task output or a comparison on one, not {type(condition).__name__}"
        )
    if tracer.guards:
        raise WorkflowDefinitionError(
            "nested when() blocks are not supported: compute the combined condition in a task"
        )
    tracer.guards.append(guard)
    try:
        yield
    finally:
        tracer.guards.pop()


def sleep(seconds: Any = None, *, until: Any = None, id: str | None = None) -> Ref:
    """A durable sleep node: done `seconds` after it becomes ready, or at the instant `until`
    (RFC 3339 text, or a task's output giving one). Survives orchestrator restarts."""
    tracer = active_tracer("sleep")
    if (seconds is None) == (until is None):
        raise WorkflowDefinitionError("sleep() takes exactly one of seconds or until=")
    spec = (
        {"seconds": to_template(seconds, "sleep(seconds)")}
        if seconds is not None
        else {"until": to_template(until, "sleep(until=...)")}
    )
    return tracer.add({"id": tracer.new_id("sleep", id), "sleep": spec})


_NO_DEFAULT = object()


def wait_for_event(
    type: str,
    *,
    match: Mapping[str, Any] | None = None,
    timeout: float | None = None,  # a number (not an expression): part of the spec
    default: Any = _NO_DEFAULT,
    id: str | None = None,
) -> Ref:
    """A node that waits for a CloudEvent of `type` published on the ingest subjects whose
    attributes equal `match` (e.g. `{"subject": order_id}`); its output is the event. After
    `timeout` seconds it fails with WaitTimeout — or, given a `default`, succeeds with it."""
    tracer = active_tracer("wait_for_event")
    spec: dict[str, Any] = {
        "type": type,
        "match": {
            k: to_template(v, f"wait_for_event match {k!r}") for k, v in (match or {}).items()
        },
        "timeout_s": timeout,
    }
    if default is not _NO_DEFAULT:
        spec["on_timeout"] = "default"
        spec["default"] = to_template(default, "wait_for_event default")
    return tracer.add(
        {"id": tracer.new_id(f"wait_{type.rsplit('.', 1)[-1]}", id), "wait_for": spec}
    )


def subworkflow(
    child: Workflow | str,
    *,
    version: int | None = None,
    id: str | None = None,
    retries: int | None = None,
    **inputs: Any,
) -> Ref:
    """Run another registered workflow as one node of this one; its output is the child's."""
    tracer = active_tracer("subworkflow")
    name = child.name if isinstance(child, Workflow) else child
    node: dict[str, Any] = {
        "id": tracer.new_id(name, id),
        "workflow": {"name": name, "version": version},
        "inputs": {k: to_template(v, f"input {k!r} of {name!r}") for k, v in inputs.items()},
    }
    if retries is not None:
        node["retry"] = {"max_attempts": retries + 1}
    return tracer.add(node)
