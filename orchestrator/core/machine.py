"""The functional core: every workflow rule, as transitions from (run, event) to (run', commands).

    start_run(spec, run_id, request, now)  -> Transition   a run.requested for a new run
    advance(spec, run, event, now)         -> Transition   any other event for an existing run

No I/O, no clock (`now` is given), no randomness (retry jitter is derived from the ids). The
machine updates `run` in place and says which node keys it changed; a caller that needs the
previous state copies it first. Business outcomes (a failed task, a timeout, a cancellation)
are states and commands, never exceptions; `EventRejected` is raised — before anything is
changed — only for an event that breaks the contract (e.g. names a node the run does not have).

Rules, in short:
- A node runs when all its dependencies succeeded (or were skipped); a skipped dependency
  skips it too, and so does a `when` condition that does not hold.
- An attempt is identified by (run, node key, attempt). Only the current attempt of a node in
  flight can move it; anything else (a duplicate, a stale attempt's late result) changes nothing.
- A failed attempt is retried while attempts remain and the error is retryable (its
  `retryable` flag, and its type not listed in the policy's `non_retryable`), after an
  exponential backoff with deterministic jitter (a durable timer).
- An execution timeout starts when the attempt starts; when its timer fires first, the attempt
  fails with a retryable `TimeoutError` and the worker is asked to cancel it.
- A mapped node dispatches one child per element; it succeeds with the list of the children's
  outputs, in order, once all succeeded. Any node failing for good fails the run, which cancels
  everything still in flight.
"""

from __future__ import annotations

from typing import Any

from events.models import (
    RUN_CANCEL_REQUESTED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_SUCCEEDED,
    TASK_CANCEL_REQUESTED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_STARTED,
    ErrorInfo,
    RunCancelled,
    RunCancelRequested,
    RunFailed,
    RunRequested,
    RunRetryRequested,
    RunSucceeded,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TimerFired,
    WaitMatched,
    WebhookAttempted,
    WireModel,
)
from orchestrator.core.compiler import CompiledNode, CompiledSpec
from orchestrator.core.expressions import (
    ExpressionError,
    Scope,
    evaluate,
)
from orchestrator.core.rules import (
    backoff_delay,
    child_run_id,
    expression_error,
    holds,
    input_problems,
    instant_of,
    iso_utc,
    retryable,
    skipped_as_none,
    timer_id,
)
from orchestrator.core.state import (
    CANCELLED,
    DISPATCHED,
    FAILED,
    IN_FLIGHT,
    NODE_TERMINAL,
    RETRYING,
    RUN_TERMINAL,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    Attempt,
    CancelTimer,
    CancelWait,
    Dispatch,
    Emit,
    NodeState,
    RunState,
    StartChild,
    StartTimer,
    StartWait,
    Transition,
    child_key,
)
from orchestrator.errors import EventRejected

# The orchestrator's deadline is a backstop for a worker that hangs or died silently: the worker
# enforces the timeout itself and reports a TimeoutError with its traceback, a little earlier.
DEADLINE_GRACE_S = 1.0

RunEvent = (
    RunCancelRequested
    | RunRetryRequested
    | TaskStarted
    | TaskCompleted
    | TaskFailed
    | TimerFired
    | WaitMatched
    | WebhookAttempted
)


def start_run(spec: CompiledSpec, run_id: str, request: RunRequested, now: float) -> Transition:
    run = RunState(
        run_id=run_id,
        workflow=spec.name,
        version=spec.version,
        status=RUNNING,
        input=dict(request.input),
        created_at=now,
        updated_at=now,
        idempotency_key=request.idempotency_key,
        parent=request.parent.model_dump() if request.parent else None,
        nodes={node_id: NodeState(key=node_id, node_id=node_id) for node_id in spec.order},
        node_order=list(spec.order),
    )
    step = _Step(spec, run, now, Transition(run, created=True))
    step.out.changed.update(run.nodes)
    if request.parent is not None:
        parent = request.parent
        step.out.commands.append(
            Emit(
                TASK_STARTED,
                parent.run_id,
                TaskStarted(
                    run_id=parent.run_id,
                    node_id=parent.node_id,
                    attempt=parent.attempt,
                    worker=f"run:{run_id}",
                ),
                f"child:{run_id}:started",
            )
        )
    problems = input_problems(spec, run.input)
    if problems:
        step.fail_run(
            ErrorInfo(
                type="InvalidInput",
                message=f"input of workflow {spec.name!r} is invalid: " + "; ".join(problems),
                retryable=False,
                details=problems,
            ),
            node=None,
        )
        return step.out
    step.schedule_ready()
    step.finish_if_done()
    return step.out


def advance(spec: CompiledSpec, run: RunState, event: RunEvent, now: float) -> Transition:
    step = _Step(spec, run, now, Transition(run))
    _apply(step, event)
    if step.out.applied:
        # Only an applied event moves `updated_at`: a duplicate, a stale result or a rejected
        # event must leave the run exactly as it was (invariant 2), the cached copy included.
        run.updated_at = now
    return step.out


def _apply(step: _Step, event: RunEvent) -> Transition:
    run = step.run
    if isinstance(event, RunCancelRequested):
        if run.status in RUN_TERMINAL:
            return step.unchanged()
        step.cancel_run(event.reason)
        return step.out
    if isinstance(event, WebhookAttempted):
        # Recorded whatever the run's state (it is terminal by then): a delivery log.
        record = event.model_dump(exclude={"run_id"})
        if record in run.notifications:
            return step.unchanged()
        run.notifications.append(record)
        return step.out
    if isinstance(event, RunRetryRequested):
        bad_input = bool(run.error) and run.error.get("type") == "InvalidInput"  # type: ignore[union-attr]
        if run.status not in (FAILED, CANCELLED) or bad_input:
            return step.unchanged()  # only a run that ended badly can be retried (not bad input)
        step.retry_run()
        step.finish_if_done()
        return step.out

    node = run.nodes.get(event.node_id)
    if node is None:
        raise EventRejected(
            f"run {run.run_id!r} (workflow {run.workflow!r}) has no node {event.node_id!r}"
        )
    # `not node.attempts`: a node with no attempt (waiting, skipped, or a mapped parent, whose
    # children hold the attempts) has nothing an event could move; a TimerFired for attempt 0
    # of a running mapped parent used to reach `failed()` and crash on the missing attempt.
    if run.status in RUN_TERMINAL or node.attempt != event.attempt or not node.attempts:
        return step.unchanged()

    if isinstance(event, TaskStarted):
        if node.status != DISPATCHED:
            return step.unchanged()
        step.started(node, event.worker)
    elif isinstance(event, TaskCompleted):
        if node.status not in IN_FLIGHT:
            return step.unchanged()
        step.completed(node, event.output, event.worker)
    elif isinstance(event, TaskFailed):
        if node.status not in IN_FLIGHT:
            return step.unchanged()
        step.failed(node, event.error, event.worker)
    elif isinstance(event, WaitMatched):
        if node.status != RUNNING or step.compiled(node).kind != "wait_for":
            return step.unchanged()
        step.completed(node, event.event, "event")
    elif event.kind == "retry":
        if node.status != RETRYING:
            return step.unchanged()
        step.dispatch(node, node.attempt + 1, node.input)
    elif event.kind == "sleep":
        if node.status != RUNNING:
            return step.unchanged()
        step.completed(node, {"slept_until": iso_utc(step.now)}, "timer")
    else:
        if node.status not in IN_FLIGHT:
            return step.unchanged()
        wait = step.compiled(node).spec.wait_for
        if wait is not None:
            if wait.on_timeout == "default":
                step.completed(node, wait.default, "timer")
            else:
                step.failed(
                    node,
                    ErrorInfo(
                        type="WaitTimeout",
                        message=f"node {node.key!r} waited {wait.timeout_s}s for a {wait.type!r} "
                        "event that did not come",
                        retryable=False,
                    ),
                    "timer",
                )
            step.finish_if_done()
            return step.out
        timeout = step.compiled(node).spec.timeout_s
        step.emit_cancel(node, "execution timeout")
        step.failed(
            node,
            ErrorInfo(
                type="TimeoutError",
                message=f"attempt {node.attempt} of node {node.key!r} exceeded its "
                f"{timeout}s execution timeout",
                retryable=True,
            ),
            None,
        )
    step.finish_if_done()
    return step.out


class _Step:
    """One transition under construction: the run, the clock reading, and what it produced."""

    __slots__ = ("now", "out", "run", "spec")

    def __init__(self, spec: CompiledSpec, run: RunState, now: float, out: Transition) -> None:
        self.spec = spec
        self.run = run
        self.now = now
        self.out = out

    def unchanged(self) -> Transition:
        self.out.applied = False
        return self.out

    def compiled(self, node: NodeState) -> CompiledNode:
        return self.spec.nodes[node.node_id]

    def touch(self, node: NodeState) -> None:
        self.out.changed.add(node.key)

    # ---- scheduling --------------------------------------------------------------------
    def schedule_ready(self) -> None:
        nodes = self.run.nodes
        for node_id in self.spec.order:
            node = nodes[node_id]
            if node.status != WAITING or self.run.status != RUNNING:
                continue
            compiled = self.spec.nodes[node_id]
            dep_states = [nodes[d].status for d in compiled.deps]
            if any(s not in NODE_TERMINAL for s in dep_states):
                continue
            if any(s != SUCCEEDED for s in dep_states):
                node.status = SKIPPED  # a skipped (or cancelled) upstream skips its dependents
                self.touch(node)
                continue
            try:
                condition = compiled.spec.when
                if (
                    compiled.when is not None
                    and condition is not None
                    and not holds(condition, evaluate(compiled.when, self.scope()))
                ):
                    node.status = SKIPPED
                    self.touch(node)
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
            node.status = SUCCEEDED
            node.output = []
            return
        node.status = RUNNING
        for index, child_input in enumerate(child_inputs):
            child = NodeState(key=child_key(node.node_id, index), node_id=node.node_id, index=index)
            self.run.nodes[child.key] = child
            self.dispatch(child, 1, child_input)

    def begin(self, node: NodeState) -> None:
        """An attempt the orchestrator runs itself (a sleep, a wait): running at once."""
        node.attempt += 1
        node.status = RUNNING
        node.attempts.append(Attempt(node.attempt, RUNNING, self.now, started_at=self.now))
        self.touch(node)

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

    def timer(self, node: NodeState, kind: str, due: float) -> None:
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

    def dispatch(self, node: NodeState, attempt: int, node_input: Any) -> None:
        compiled = self.compiled(node)
        node.attempt = attempt
        node.status = DISPATCHED
        node.input = node_input
        node.attempts.append(Attempt(attempt, DISPATCHED, self.now))
        self.touch(node)
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

    # ---- attempt outcomes --------------------------------------------------------------
    def started(self, node: NodeState, worker: str) -> None:
        node.status = RUNNING
        current = node.attempts[-1]
        current.status = RUNNING
        current.started_at = self.now
        current.worker = worker
        self.touch(node)
        timeout = self.compiled(node).spec.timeout_s
        if timeout is not None:
            self.out.commands.append(
                StartTimer(
                    timer_id(self.run.run_id, node, "deadline"),
                    self.now + timeout + DEADLINE_GRACE_S,
                    self.run.run_id,
                    "deadline",
                    node.key,
                    node.attempt,
                )
            )

    def completed(self, node: NodeState, output: Any, worker: str) -> None:
        self.close_attempt(node, SUCCEEDED, worker, None)
        node.status = SUCCEEDED
        node.output = output
        if node.index is not None:
            parent = self.run.nodes[node.node_id]
            parent.children_done += 1
            self.touch(parent)
            if parent.children_done == parent.children:
                parent.status = SUCCEEDED
                parent.output = [
                    self.run.nodes[child_key(parent.node_id, i)].output
                    for i in range(parent.children)
                ]
        self.schedule_ready()

    def failed(self, node: NodeState, error: ErrorInfo, worker: str | None) -> None:
        self.close_attempt(node, FAILED, worker, error)
        policy = self.compiled(node).spec.retry
        used = node.attempt - node.first_attempt + 1  # attempts since the last manual retry
        if retryable(error, policy) and used < policy.max_attempts:
            node.status = RETRYING
            delay = backoff_delay(policy, self.run.run_id, node.key, node.attempt)
            self.out.commands.append(
                StartTimer(
                    timer_id(self.run.run_id, node, "retry"),
                    self.now + delay,
                    self.run.run_id,
                    "retry",
                    node.key,
                    node.attempt,
                )
            )
            return
        self.fail_for_good(node, error)

    def close_attempt(
        self, node: NodeState, status: str, worker: str | None, error: ErrorInfo | None
    ) -> None:
        current = node.attempts[-1]
        current.status = status
        current.finished_at = self.now
        if worker is not None:
            current.worker = worker
        if error is not None:
            current.error = error.model_dump()
        self.touch(node)
        if self.deadline_s(node) is not None and current.started_at is not None:
            self.out.commands.append(CancelTimer(timer_id(self.run.run_id, node, "deadline")))
        if self.compiled(node).kind == "wait_for":
            self.out.commands.append(CancelWait(self.run.run_id, node.key))

    def fail_for_good(self, node: NodeState, error: ErrorInfo) -> None:
        located = error.model_copy(update={"node_id": node.key})
        node.status = FAILED
        node.error = located.model_dump()
        self.touch(node)
        if node.index is not None:
            parent = self.run.nodes[node.node_id]
            parent.status = FAILED
            parent.error = node.error
            self.touch(parent)
        self.fail_run(located, node.key)

    # ---- run outcomes ------------------------------------------------------------------
    def fail_run(self, error: ErrorInfo, node: str | None) -> None:
        self.stop_everything(f"run failed at node {node!r}" if node else "run failed")
        self.end_run(FAILED)
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
        self.end_run(CANCELLED)
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
        run.status = RUNNING
        run.error = None
        run.output = None
        run.finished_at = None
        for node in list(run.nodes.values()):
            if node.status not in (FAILED, CANCELLED):
                continue
            node.error = None
            node.first_attempt = node.attempt + 1
            self.touch(node)
            if node.index is not None:
                self.dispatch(node, node.attempt + 1, node.input)
            elif node.children:
                node.status = RUNNING  # its failed children are re-dispatched above/below
            else:
                node.status = WAITING
        self.schedule_ready()

    def finish_if_done(self) -> None:
        if self.run.status != RUNNING:
            return
        nodes = self.run.nodes
        if any(nodes[n].status not in NODE_TERMINAL for n in self.spec.order):
            return
        skipped = {n for n in self.spec.order if nodes[n].status == SKIPPED}
        try:
            output = evaluate(skipped_as_none(self.spec.output, skipped), self.scope())
        except ExpressionError as exc:
            self.fail_run(expression_error(exc, None), None)
            return
        self.end_run(SUCCEEDED)
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

    def end_run(self, status: str) -> None:
        self.run.status = status
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
                kind = self.compiled(node).kind
                if kind == "task" and (node.key, node.attempt) not in withdrawn:
                    self.emit_cancel(node, reason)
                elif kind == "workflow":
                    child = child_run_id(self.run.run_id, node.key, node.attempt)
                    self.out.commands.append(
                        Emit(
                            RUN_CANCEL_REQUESTED,
                            child,
                            RunCancelRequested(run_id=child, reason=reason),
                            "cancel",
                        )
                    )
                elif kind == "wait_for":
                    self.out.commands.append(CancelWait(self.run.run_id, node.key))
                elif kind == "sleep":
                    self.out.commands.append(CancelTimer(timer_id(self.run.run_id, node, "sleep")))
                if node.attempts[-1].started_at is not None and self.deadline_s(node):
                    self.out.commands.append(
                        CancelTimer(timer_id(self.run.run_id, node, "deadline"))
                    )
                node.attempts[-1].status = CANCELLED
                node.attempts[-1].finished_at = self.now
            elif node.status == RETRYING:
                self.out.commands.append(CancelTimer(timer_id(self.run.run_id, node, "retry")))
            node.status = CANCELLED
            self.touch(node)

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
