"""The outcome of a run, as rules of `Step` (a mixin: `core/step.py` holds the rest).

A run succeeds when every node of its spec reached a terminal status (its output evaluated
with skipped nodes as None), fails when a node fails for good (everything still in flight is
cancelled first), is cancelled on request, and may be retried by hand once it failed or was
cancelled: what succeeded stays, the rest runs again with a fresh retry budget. A child run
reports its end to its parent's node as that node's attempt result.
"""

from __future__ import annotations

import abc
from typing import Any

from events.models import (
    RUN_CANCEL_REQUESTED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_SUCCEEDED,
    TASK_CANCEL_REQUESTED,
    TASK_COMPLETED,
    TASK_FAILED,
    ErrorInfo,
    RunCancelled,
    RunCancelRequested,
    RunFailed,
    RunSucceeded,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    WireModel,
)
from orchestrator.core.commands import CancelTimer, CancelWait, Dispatch, Emit
from orchestrator.core.compiler import CompiledNode, CompiledSpec
from orchestrator.core.expressions import ExpressionError, Scope, evaluate
from orchestrator.core.rules import child_run_id, expression_error, skipped_as_none, timer_id
from orchestrator.core.state import NodeState, RunState, Transition
from orchestrator.core.statuses import (
    IN_FLIGHT,
    NODE_TERMINAL,
    NodeStatus,
    RunStatus,
    check_run_move,
)


class RunOutcomes(abc.ABC):
    """The run-level rules. `Step` provides the state and the node-level rules they use."""

    __slots__ = ()
    spec: CompiledSpec
    run: RunState
    now: float
    out: Transition

    @abc.abstractmethod
    def compiled(self, node: NodeState) -> CompiledNode: ...

    @abc.abstractmethod
    def touch(self, node: NodeState) -> None: ...

    @abc.abstractmethod
    def move_node(self, node: NodeState, status: NodeStatus, *, retry: bool = False) -> None: ...

    @abc.abstractmethod
    def schedule_ready(self) -> None: ...

    @abc.abstractmethod
    def dispatch(
        self, node: NodeState, attempt: int, node_input: Any, *, retry: bool = False
    ) -> None: ...

    @abc.abstractmethod
    def scope(self, item: Any = None) -> Scope: ...

    @abc.abstractmethod
    def deadline_s(self, node: NodeState) -> float | None: ...

    @abc.abstractmethod
    def cancel_start_timer(self, node: NodeState) -> None: ...

    def move_run(self, status: RunStatus, *, retry: bool = False) -> None:
        check_run_move(self.run.status, status, retry=retry)
        self.run.status = status

    def fail_run(self, error: ErrorInfo, node: str | None) -> None:
        self.stop_everything(f"run failed at node {node!r}" if node else "run failed")
        self.end_run(RunStatus.FAILED)
        self.run.error = error.model_dump()
        self.report_to_parent(error=error)
        self.emit(
            RUN_FAILED,
            RunFailed(
                run_id=self.run.run_id,
                workflow=self.run.workflow,
                version=self.run.version,
                error=error,
            ),
            "failed",
        )

    def cancel_run(self, reason: str) -> None:
        self.stop_everything(reason)
        self.end_run(RunStatus.CANCELLED)
        self.run.error = {"type": "Cancelled", "message": reason, "retryable": False}
        self.report_to_parent(
            error=ErrorInfo(
                type="Cancelled", message=f"child run cancelled: {reason}", retryable=False
            )
        )
        self.emit(
            RUN_CANCELLED,
            RunCancelled(
                run_id=self.run.run_id,
                workflow=self.run.workflow,
                version=self.run.version,
                reason=reason,
            ),
            "cancelled",
        )

    def retry_run(self) -> None:
        """Resume a failed or cancelled run: what succeeded stays, the rest runs again with a
        fresh retry budget; attempt numbers continue (they key deduplication)."""
        run = self.run
        self.move_run(RunStatus.RUNNING, retry=True)
        run.earlier_active_s = run.active_s()
        run.resumed_at = self.now
        run.error = None
        run.output = None
        run.finished_at = None
        for node in list(run.nodes.values()):
            if node.status not in (NodeStatus.FAILED, NodeStatus.CANCELLED):
                continue
            node.error = None
            node.first_attempt = node.attempt + 1
            self.touch(node)
            if node.index is not None:
                self.dispatch(node, node.attempt + 1, node.input, retry=True)
            elif node.children:
                # A mapped parent runs again; its failed children are re-dispatched in this loop.
                self.move_node(node, NodeStatus.RUNNING, retry=True)
            else:
                self.move_node(node, NodeStatus.WAITING, retry=True)
        self.schedule_ready()

    def finish_if_done(self) -> None:
        if self.run.status != RunStatus.RUNNING:
            return
        nodes = self.run.nodes
        if any(nodes[n].status not in NODE_TERMINAL for n in self.spec.order):
            return
        skipped = {n for n in self.spec.order if nodes[n].status == NodeStatus.SKIPPED}
        try:
            output = evaluate(skipped_as_none(self.spec.output, skipped), self.scope())
        except ExpressionError as exc:
            self.fail_run(expression_error(exc, None), None)
            return
        self.end_run(RunStatus.SUCCEEDED)
        self.run.output = output
        self.report_to_parent(output=output)
        self.emit(
            RUN_SUCCEEDED,
            RunSucceeded(
                run_id=self.run.run_id,
                workflow=self.run.workflow,
                version=self.run.version,
                output=output,
            ),
            "succeeded",
        )

    def end_run(self, status: RunStatus) -> None:
        self.move_run(status)
        self.run.finished_at = self.now

    def report_to_parent(self, output: Any = None, error: ErrorInfo | None = None) -> None:
        """A child run's end is its parent node's attempt result (deterministic event ids)."""
        parent = self.run.parent
        if parent is None:
            return
        ref = {
            "run_id": parent["run_id"],
            "node_id": parent["node_id"],
            "attempt": parent.get("attempt", 1),
            "worker": f"run:{self.run.run_id}",
        }
        if error is None:
            data: WireModel = TaskCompleted(**ref, output=output)
            event_type, key = TASK_COMPLETED, "completed"
        else:
            data, event_type, key = TaskFailed(**ref, error=error), TASK_FAILED, "failed"
        self.out.commands.append(
            Emit(event_type, parent["run_id"], data, f"child:{self.run.run_id}:{key}")
        )

    def stop_everything(self, reason: str) -> None:
        # A run that ends in the transition that dispatched some of its nodes (an earlier node
        # in the same scheduling pass, before a later one failed on its expression) withdraws
        # those dispatches instead of publishing a task and, right behind it, its cancellation:
        # a worker could otherwise run a task of a run that had already failed.
        withdrawn = {(c.node_key, c.attempt) for c in self.out.commands if isinstance(c, Dispatch)}
        if withdrawn:
            self.out.commands[:] = [c for c in self.out.commands if not isinstance(c, Dispatch)]
        for node in self.run.nodes.values():
            if node.status in NODE_TERMINAL:
                continue
            if node.status in IN_FLIGHT and node.children is None:
                self.call_off(node, reason, dispatched=(node.key, node.attempt) not in withdrawn)
            elif node.status == NodeStatus.RETRYING:
                self.out.commands.append(CancelTimer(timer_id(self.run.run_id, node, "retry")))
            self.move_node(node, NodeStatus.CANCELLED)

    def call_off(self, node: NodeState, reason: str, *, dispatched: bool) -> None:
        """Stop the attempt a node has out: ask the worker (or the child run) to stop, forget
        its wait or its timers, and close the attempt as cancelled."""
        kind = self.compiled(node).kind
        if kind == "task" and dispatched:
            self.emit_cancel(node, reason)
        elif kind == "workflow":
            child = child_run_id(self.run.run_id, node.key, node.attempt)
            request = RunCancelRequested(run_id=child, reason=reason)
            self.out.commands.append(Emit(RUN_CANCEL_REQUESTED, child, request, "cancel"))
        elif kind == "wait_for":
            self.out.commands.append(CancelWait(self.run.run_id, node.key))
        elif kind == "sleep":
            self.out.commands.append(CancelTimer(timer_id(self.run.run_id, node, "sleep")))
        if node.attempts[-1].started_at is not None and self.deadline_s(node):
            self.out.commands.append(CancelTimer(timer_id(self.run.run_id, node, "deadline")))
        if kind == "task" and node.attempts[-1].started_at is None:
            self.cancel_start_timer(node)
        node.attempts[-1].status = NodeStatus.CANCELLED
        node.attempts[-1].finished_at = self.now

    def emit_cancel(self, node: NodeState, reason: str) -> None:
        self.emit(
            TASK_CANCEL_REQUESTED,
            TaskCancelRequested(
                run_id=self.run.run_id, node_id=node.key, attempt=node.attempt, reason=reason
            ),
            f"cancel:{node.key}:{node.attempt}",
        )

    def emit(self, event_type: str, data: WireModel, key: str) -> None:
        self.out.commands.append(Emit(event_type, self.run.run_id, data, key))
