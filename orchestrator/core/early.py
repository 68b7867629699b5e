"""Results that arrive before their attempt is dispatched: kept on the node, applied when it is.

A worker's task.completed or task.failed names (run, node, attempt). Normally the machine has
dispatched that attempt before any result for it can exist. In lease mode it may not have yet:
a deposed owner's commands to workers are not fenced, so an attempt it dispatched can run while
its successor re-decides the partition from a snapshot and the stream's tail, and an event can
be applied out of stream order (a batch whose commit failed is delivered again after later
ones). Such a result, dropped as stale, would be lost for good: the successor's own dispatch of
that attempt carries the id the task stream has already seen, so nothing runs again, and the
run would wait for ever.

So a result for an attempt ahead of the node's — a later attempt, or the current one while it
is still queued behind its limits — on a node and run that have not ended is kept, and applied
the moment the machine dispatches that attempt itself (its limits granted, its retry due), as if
the worker had answered at once. That dispatch is withdrawn: the task already ran. The first
result kept for an attempt is the one applied, like a worker's first answer; results of
attempts the node has passed are dropped when it moves on. (docs/failover.md)
"""

from __future__ import annotations

from typing import Any

from events.models import TaskCompleted, TaskFailed
from orchestrator.core.commands import Dispatch, StartChild
from orchestrator.core.state import NodeState, RunState, Transition
from orchestrator.core.statuses import NODE_TERMINAL, RUN_TERMINAL, NodeStatus

Result = TaskCompleted | TaskFailed
_MODELS: dict[str, type[Result]] = {"completed": TaskCompleted, "failed": TaskFailed}


def is_early(run: RunState, node: NodeState, result: Result) -> bool:
    """Whether `result` is for an attempt the machine has not dispatched yet."""
    if run.status in RUN_TERMINAL or node.status in NODE_TERMINAL:
        return False
    if result.attempt == node.attempt:
        return node.status == NodeStatus.QUEUED
    return result.attempt > node.attempt


def keep(node: NodeState, result: Result) -> bool:
    """Keep `result` on `node`; False (changes nothing) if one is kept for its attempt."""
    if any(record["attempt"] == result.attempt for record in node.early):
        return False
    kind = "completed" if isinstance(result, TaskCompleted) else "failed"
    node.early.append(
        {"attempt": result.attempt, "kind": kind, "event": result.model_dump(mode="json")}
    )
    return True


def take(node: NodeState) -> Result | None:
    """The result kept for the node's current attempt (just dispatched), if any; what was kept
    for attempts the node has now reached or passed is dropped."""
    found: dict[str, Any] | None = None
    for record in node.early:
        if record["attempt"] == node.attempt:
            found = record
    node.early = [r for r in node.early if r["attempt"] > node.attempt]
    if found is None:
        return None
    return _MODELS[found["kind"]].model_validate(found["event"])


def withdraw_dispatch(out: Transition, node_key: str, attempt: int) -> None:
    """The attempt's task (or child run) already ran: do not hand it out again."""
    out.commands[:] = [
        c
        for c in out.commands
        if not (
            isinstance(c, Dispatch | StartChild) and (c.node_key, c.attempt) == (node_key, attempt)
        )
    ]
