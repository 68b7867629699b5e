"""One transition under construction (`Step`): the rules of the machine as its methods.

`core/machine.py` decides which rule an event triggers (its tables); the methods here carry the
node-level rules out: scheduling ready nodes (dependencies, conditions, map expansion),
dispatching attempts, and the outcome of an attempt (fan-in, retries with backoff, timeouts).
The run-level rules (success, failure, cancellation, a manual retry) are in `core/outcomes.py`.
Every status change goes through `move_node` / `move_run`, which hold it to the status graph
of `core/statuses.py`.
"""

from __future__ import annotations

from typing import Any

from events.models import ErrorInfo
from orchestrator.core.commands import (
    CancelTimer,
    CancelWait,
    Dispatch,
    StartChild,
    StartTimer,
    StartWait,
    TimerKind,
)
from orchestrator.core.compiler import CompiledNode, CompiledSpec
from orchestrator.core.expressions import ExpressionError, Scope, evaluate
from orchestrator.core.outcomes import RunOutcomes
from orchestrator.core.rules import (
    backoff_delay,
    child_run_id,
    expression_error,
    holds,
    instant_of,
    retryable,
    timer_id,
)
from orchestrator.core.state import Attempt, NodeState, RunState, Transition, child_key
from orchestrator.core.statuses import (
    NODE_TERMINAL,
    NodeStatus,
    RunStatus,
    check_node_move,
)

# The orchestrator's deadline is a backstop for a worker that hangs or died silently: the worker
# enforces the timeout itself and reports a TimeoutError with its traceback, a little earlier.
DEADLINE_GRACE_S = 1.0


class Step(RunOutcomes):
    """One transition under construction: the run, the clock reading, and what it produced."""

    __slots__ = ("now", "out", "run", "sent_early", "spec", "withdrawn")

    def __init__(self, spec: CompiledSpec, run: RunState, now: float, out: Transition) -> None:
        self.spec = spec
        self.run = run
        self.now = now
        self.out = out
        self.withdrawn: set[str] = set()
        # Nodes sent out by this transition with a result kept for later (core/early.py).
        self.sent_early: list[NodeState] = []

    def compiled(self, node: NodeState) -> CompiledNode:
        return self.spec.nodes[node.node_id]

    def touch(self, node: NodeState) -> None:
        self.out.changed.add(node.key)

    def move_node(self, node: NodeState, status: NodeStatus, *, retry: bool = False) -> None:
        """Every node status change: along the status graph only (`retry`: a manual retry of
        the run may reopen a failed or cancelled node)."""
        check_node_move(node.status, status, retry=retry)
        node.status = status
        self.touch(node)

    # ---- scheduling --------------------------------------------------------------------
    def schedule_ready(self) -> None:
        nodes = self.run.nodes
        for node_id in self.spec.order:
            node = nodes[node_id]
            if node.status != NodeStatus.WAITING or self.run.status != RunStatus.RUNNING:
                continue
            compiled = self.spec.nodes[node_id]
            dep_states = [nodes[d].status for d in compiled.deps]
            if any(s not in NODE_TERMINAL for s in dep_states):
                continue
            if any(s != NodeStatus.SUCCEEDED for s in dep_states):
                # A skipped (or cancelled) upstream skips its dependents.
                self.move_node(node, NodeStatus.SKIPPED)
                continue
            try:
                condition = compiled.spec.when
                if (
                    compiled.when is not None
                    and condition is not None
                    and not holds(condition, evaluate(compiled.when, self.scope()))
                ):
                    self.move_node(node, NodeStatus.SKIPPED)
                    continue
                self.start(node, compiled)
            except ExpressionError as exc:
                self.fail_for_good(node, expression_error(exc, node.key))

    def start(self, node: NodeState, compiled: CompiledNode) -> None:
        if compiled.kind == "sleep":
            self.start_sleep(node, compiled)
            return
        if compiled.kind == "wait_for":
            self.start_wait(node, compiled)
            return
        if compiled.over is None or compiled.spec.map is None:
            # attempt + 1, not 1: after a manual retry of the run, attempt numbers keep counting
            # up so that every (run, node, attempt) and its deterministic ids stay unique.
            self.dispatch(node, node.attempt + 1, self.evaluate_inputs(compiled, None))
            return
        items = evaluate(compiled.over, self.scope())
        if not isinstance(items, list):
            raise ExpressionError(
                f"map.over of node {node.key!r} must give a list, got {type(items).__name__}"
            )
        # Every child's input is evaluated before the first child exists, so an ExpressionError
        # on element k fails the node without leaving children 0..k-1 behind, half-expanded.
        param = compiled.spec.map.param
        child_inputs = []
        for item in items:
            child_input = self.evaluate_inputs(compiled, item)
            child_input[param] = item
            child_inputs.append(child_input)
        self.touch(node)
        node.children = len(items)
        if not items:
            self.move_node(node, NodeStatus.SUCCEEDED)
            node.output = []
            return
        self.move_node(node, NodeStatus.RUNNING)
        node.next_child = node.children_active = 0
        for index, child_input in enumerate(child_inputs):
            key = child_key(node.node_id, index)
            child = NodeState(key=key, node_id=node.node_id, index=index, input=child_input)
            self.run.nodes[key] = child
            self.touch(child)
        self.fill_map(node)  # all of them, or the first max_parallel

    def begin(self, node: NodeState) -> None:
        """An attempt the orchestrator runs itself (a sleep, a wait): running at once."""
        node.attempt += 1
        self.move_node(node, NodeStatus.RUNNING)
        node.attempts.append(
            Attempt(node.attempt, NodeStatus.RUNNING, self.now, started_at=self.now)
        )

    def start_sleep(self, node: NodeState, compiled: CompiledNode) -> None:
        sleep = compiled.spec.sleep
        assert sleep is not None
        # `compiled.until` holds whichever was given: an instant, or a number of seconds.
        assert compiled.until is not None
        value = evaluate(compiled.until, self.scope())
        if sleep.seconds is None:
            due = instant_of(value, node.key)
        elif isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            due = self.now + float(value)
        else:
            raise ExpressionError(
                f"sleep.seconds of node {node.key!r} must give a number >= 0, got {value!r}"
            )
        self.begin(node)
        self.timer(node, "sleep", max(due, self.now))

    def start_wait(self, node: NodeState, compiled: CompiledNode) -> None:
        wait = compiled.spec.wait_for
        assert wait is not None
        scope = self.scope()
        match = {}
        for attr, template in compiled.match.items():
            value = evaluate(template, scope)
            if value is None or isinstance(value, dict | list):
                raise ExpressionError(
                    f"wait_for.match.{attr} of node {node.key!r} must give a string, a number "
                    f"or a boolean, got {value!r}"
                )
            match[attr] = str(value).lower() if isinstance(value, bool) else str(value)
        self.begin(node)
        self.out.commands.append(
            StartWait(self.run.run_id, node.key, node.attempt, wait.type, match)
        )
        if wait.timeout_s is not None:
            self.timer(node, "deadline", self.now + wait.timeout_s)

    def timer(self, node: NodeState, kind: TimerKind, due: float) -> None:
        self.out.commands.append(
            StartTimer(
                timer_id(self.run.run_id, node, kind),
                due,
                self.run.run_id,
                kind,
                node.key,
                node.attempt,
            )
        )

    def deadline_s(self, node: NodeState) -> float | None:
        spec = self.compiled(node).spec
        return spec.wait_for.timeout_s if spec.wait_for is not None else spec.timeout_s

    def evaluate_inputs(self, compiled: CompiledNode, item: Any) -> dict[str, Any]:
        scope = self.scope(item)
        return {name: evaluate(t, scope) for name, t in compiled.inputs.items()}

    def scope(self, item: Any = None) -> Scope:
        nodes = self.run.nodes

        def output(node_id: str) -> Any:
            return nodes[node_id].output

        return Scope(self.run.input, output, item)

    def dispatch(
        self, node: NodeState, attempt: int, node_input: Any, *, retry: bool = False
    ) -> None:
        if self.compiled(node).limits:
            self.queue_attempt(node, attempt, node_input, retry)  # dispatched once granted
            return
        node.attempt = attempt
        self.move_node(node, NodeStatus.DISPATCHED, retry=retry)
        node.input = node_input
        node.attempts.append(Attempt(attempt, NodeStatus.DISPATCHED, self.now))
        self.send(node)

    def send(self, node: NodeState) -> None:
        """Hand the node's current attempt to the workers (or start the child run)."""
        compiled = self.compiled(node)
        attempt, node_input = node.attempt, node.input
        self.touch(node)
        if node.early:
            self.sent_early.append(node)
        if compiled.spec.workflow is not None:
            child = compiled.spec.workflow
            self.out.commands.append(
                StartChild(
                    self.run.run_id,
                    node.key,
                    attempt,
                    child.name,
                    child.version,
                    node_input,
                    child_run_id(self.run.run_id, node.key, attempt),
                )
            )
            return
        assert compiled.spec.task is not None  # the spec validator guarantees one kind per node
        self.out.commands.append(
            Dispatch(
                self.run.run_id,
                node.key,
                attempt,
                compiled.spec.task,
                compiled.spec.queue,
                node_input,
                compiled.spec.timeout_s,
            )
        )
        if compiled.spec.schedule_to_start_s is not None:
            self.timer(node, "start", self.now + compiled.spec.schedule_to_start_s)

    # ---- attempt outcomes --------------------------------------------------------------
    def started(self, node: NodeState, worker: str) -> None:
        self.move_node(node, NodeStatus.RUNNING)
        current = node.attempts[-1]
        current.status = NodeStatus.RUNNING
        current.started_at = self.now
        current.worker = worker
        self.touch(node)
        self.cancel_start_timer(node)
        timeout = self.compiled(node).spec.timeout_s
        if timeout is not None:
            self.timer(node, "deadline", self.now + timeout + DEADLINE_GRACE_S)

    def completed(self, node: NodeState, output: Any, worker: str) -> None:
        self.close_attempt(node, NodeStatus.SUCCEEDED, worker, None)
        self.move_node(node, NodeStatus.SUCCEEDED)
        node.output = output
        if node.index is not None:
            parent = self.run.nodes[node.node_id]
            parent.children_done += 1
            parent.children_active -= 1
            self.touch(parent)
            if parent.children_done == parent.children:
                self.move_node(parent, NodeStatus.SUCCEEDED)
                parent.output = [
                    self.run.nodes[child_key(parent.node_id, i)].output
                    for i in range(parent.children)
                ]
            else:
                self.fill_map(parent)
        self.schedule_ready()

    def ran_for(self, attempt: Attempt, seconds: float | None) -> None:
        """A result that folds in its start (no task.started was sent for a short task): the
        attempt started `seconds` before it ended — on this clock, never before its dispatch."""
        if seconds is None or attempt.started_at is not None or attempt.finished_at is None:
            return
        attempt.started_at = max(attempt.dispatched_at, attempt.finished_at - seconds)

    def failed(self, node: NodeState, error: ErrorInfo, worker: str | None) -> None:
        self.close_attempt(node, NodeStatus.FAILED, worker, error)
        policy = self.compiled(node).spec.retry
        used = node.attempts_since_retry
        if retryable(error, policy) and used < policy.max_attempts:
            self.move_node(node, NodeStatus.RETRYING)
            delay = backoff_delay(policy, self.run.run_id, node.key, node.attempt, used)
            self.timer(node, "retry", self.now + delay)
            return
        self.fail_for_good(node, error)

    def deadline_passed(self, node: NodeState) -> None:
        """A node's deadline timer fired while its attempt was still out: a wait that timed
        out (fails, or succeeds with its default), or a task past its execution timeout."""
        wait = self.compiled(node).spec.wait_for
        if wait is not None:
            if wait.on_timeout == "default":
                self.completed(node, wait.default, "timer")
                return
            self.failed(
                node,
                ErrorInfo(
                    type="WaitTimeout",
                    message=f"node {node.key!r} waited {wait.timeout_s}s for a {wait.type!r} "
                    "event that did not come",
                    retryable=False,
                ),
                "timer",
            )
            return
        timeout = self.compiled(node).spec.timeout_s
        self.emit_cancel(node, "execution timeout")
        self.failed(
            node,
            ErrorInfo(
                type="TimeoutError",
                message=f"attempt {node.attempt} of node {node.key!r} exceeded its "
                f"{timeout}s execution timeout",
                retryable=True,
            ),
            None,
        )

    def not_started_in_time(self, node: NodeState) -> None:
        """The attempt's schedule-to-start timer fired while it was still dispatched: no worker
        took it in time (none serves its task, or all were busy). It fails, retryably: the retry
        policy decides whether another attempt waits again."""
        spec = self.compiled(node).spec
        # Were it taken this very moment, its worker must drop it: the attempt is over.
        self.emit_cancel(node, "schedule-to-start timeout")
        self.failed(
            node,
            ErrorInfo(
                type="ScheduleToStartTimeout",
                message=f"attempt {node.attempt} of node {node.key!r} was not started by any "
                f"worker within its {spec.schedule_to_start_s:g}s schedule-to-start timeout "
                f"(task {spec.task!r}, queue {spec.queue!r}): is a worker serving it running, "
                "and does it have room?",
                retryable=True,
            ),
            None,
        )

    def cancel_start_timer(self, node: NodeState) -> None:
        if self.compiled(node).spec.schedule_to_start_s is not None:
            self.out.commands.append(CancelTimer(timer_id(self.run.run_id, node, "start")))

    def close_attempt(
        self, node: NodeState, status: NodeStatus, worker: str | None, error: ErrorInfo | None
    ) -> None:
        current = node.attempts[-1]
        current.status = status
        current.finished_at = self.now
        if worker is not None:
            current.worker = worker
        if error is not None:
            current.error = error.model_dump()
        self.touch(node)
        self.release_gates(node)
        if self.deadline_s(node) is not None and current.started_at is not None:
            self.out.commands.append(CancelTimer(timer_id(self.run.run_id, node, "deadline")))
        if current.started_at is None:  # a result with no start: the start timer is still set
            self.cancel_start_timer(node)
        if self.compiled(node).kind == "wait_for":
            self.out.commands.append(CancelWait(self.run.run_id, node.key))

    def fail_for_good(self, node: NodeState, error: ErrorInfo) -> None:
        located = error.model_copy(update={"node_id": node.key})
        self.move_node(node, NodeStatus.FAILED)
        node.error = located.model_dump()
        self.touch(node)
        if node.index is not None:
            parent = self.run.nodes[node.node_id]
            self.move_node(parent, NodeStatus.FAILED)
            parent.error = node.error
            self.touch(parent)
        self.fail_run(located, node.key)
