"""The functional core: every workflow rule, as transitions from (run, event) to (run', commands).

    start_run(spec, run_id, request, now)  -> Transition   a run.requested for a new run
    advance(spec, run, event, now)         -> Transition   any other event for an existing run

No I/O, no clock (`now` is given), no randomness (retry jitter is derived from the ids). The
machine updates `run` in place and says which node keys it changed; a caller that needs the
previous state copies it first. Business outcomes (a failed task, a timeout, a cancellation)
are states and commands, never exceptions; `EventRejected` is raised — before anything is
changed — only for an event that breaks the contract (e.g. names a node the run does not have).

How an event is applied, read top to bottom:

1. A run-level event (cancel, retry, webhook attempt, the answer of a limiter to the run's own
   request for a slot) is looked up in `RUN_RULES` by the run's status. A limiter's answer to a
   request the run abandoned (it ended, or the node moved on) gives the slot back, whatever the
   run's status (docs/flow-control.md).
2. A node event names (run, node, attempt). It moves nothing when the run has ended, when the
   attempt is not the node's current one (a duplicate, a stale attempt's late result), or when
   the node holds no attempt (a node that waits, was skipped, or is a mapped parent whose
   children hold the attempts).
3. Otherwise `NODE_RULES[event kind][node status]` says what it does. The table is total:
   every (kind, status) pair names a rule, `_stale` for the pairs an at-least-once bus can
   produce but that must change nothing. A missing pair is a bug (`IllegalTransition`).

The rules themselves (dependencies, retries and backoff, timeouts, conditions, map expansion
and fan-in, cancellation, run completion) are the methods of `Step`, in `core/step.py`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping

from events.models import (
    TASK_STARTED,
    ErrorInfo,
    LimitGranted,
    LimitRefused,
    RunCancelRequested,
    RunRequested,
    RunRetryRequested,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TimerFired,
    WaitMatched,
    WebhookAttempted,
)
from orchestrator.core import early
from orchestrator.core.commands import Emit
from orchestrator.core.compiler import CompiledSpec
from orchestrator.core.flowcheck import DEFAULT_PRIORITY
from orchestrator.core.rules import input_problems, iso_utc, retry_refusal
from orchestrator.core.state import NodeState, RunState, Transition
from orchestrator.core.statuses import NodeStatus, RunStatus
from orchestrator.core.step import DEADLINE_GRACE_S, Step
from orchestrator.errors import EventRejected, IllegalTransition

__all__ = [
    "DEADLINE_GRACE_S",
    "NODE_RULES",
    "RUN_RULES",
    "NodeEvent",
    "RunEvent",
    "RunLevelEvent",
    "advance",
    "start_run",
]

NodeEventData = TaskStarted | TaskCompleted | TaskFailed | TimerFired | WaitMatched | LimitGranted
RunLevelEvent = (
    RunCancelRequested | RunRetryRequested | WebhookAttempted | LimitGranted | LimitRefused
)
RunEvent = RunLevelEvent | NodeEventData


class NodeEvent(enum.StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    WAIT_MATCHED = "wait-matched"
    RETRY_DUE = "retry-due"
    SLEEP_DUE = "sleep-due"
    DEADLINE = "deadline"
    START_DUE = "start-due"  # the attempt's schedule-to-start timeout
    GRANTED = "granted"  # a limiter granted the attempt's slot or token


class RunLevel(enum.StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"
    WEBHOOK = "webhook"
    GRANTED = "granted"  # a limiter granted the run its slot
    REFUSED = "refused"  # ... or refused it (on_limit: cancel_newest)


def start_run(spec: CompiledSpec, run_id: str, request: RunRequested, now: float) -> Transition:
    limited = spec.flow.limit is not None
    run = RunState(
        run_id=run_id,
        workflow=spec.name,
        version=spec.version,
        status=RunStatus.QUEUED if limited else RunStatus.RUNNING,
        priority=request.priority or spec.flow.priority or DEFAULT_PRIORITY,
        input=dict(request.input),
        created_at=now,
        updated_at=now,
        idempotency_key=request.idempotency_key,
        parent=request.parent.model_dump() if request.parent else None,
        nodes={node_id: NodeState(key=node_id, node_id=node_id) for node_id in spec.order},
        node_order=list(spec.order),
    )
    step = Step(spec, run, now, Transition(run, created=True))
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
    if limited:
        step.ask_run_slot()  # queued: it starts once granted
        return step.out
    step.schedule_ready()
    step.finish_if_done()
    return step.out


def advance(spec: CompiledSpec, run: RunState, event: RunEvent, now: float) -> Transition:
    step = Step(spec, run, now, Transition(run))
    if isinstance(event, LimitGranted | LimitRefused) and event.request in run.abandoned:
        applied = step.abandoned_answer(event)
    elif isinstance(event, LimitGranted) and event.node_id is not None:
        applied = _apply_node_event(step, event)
    elif isinstance(event, RunLevelEvent):
        applied = _apply_run_event(step, event)
    else:
        applied = _apply_node_event(step, event)
    if applied:
        _apply_kept_results(step)
        step.finish_if_done()
        # Only an applied event moves `updated_at`: a duplicate, a stale result or a rejected
        # event must leave the run exactly as it was (invariant 2), the cached copy included.
        run.updated_at = now
    else:
        step.out.applied = False
    return step.out


# ---- run-level events ----------------------------------------------------------------------

RunRule = Callable[[Step, RunLevelEvent], bool]


_RUN_LEVEL: Mapping[type[RunLevelEvent], RunLevel] = {
    RunCancelRequested: RunLevel.CANCEL,
    RunRetryRequested: RunLevel.RETRY,
    WebhookAttempted: RunLevel.WEBHOOK,
    LimitGranted: RunLevel.GRANTED,
    LimitRefused: RunLevel.REFUSED,
}


def _apply_run_event(step: Step, event: RunLevelEvent) -> bool:
    kind = _RUN_LEVEL[type(event)]
    rule = RUN_RULES[kind].get(step.run.status)
    if rule is None:
        raise IllegalTransition(f"no rule for a {kind} event on a {step.run.status} run")
    return rule(step, event)


def _cancel(step: Step, event: RunLevelEvent) -> bool:
    assert isinstance(event, RunCancelRequested)
    step.cancel_run(event.reason)
    return True


def _retry(step: Step, event: RunLevelEvent) -> bool:
    if retry_refusal(step.run.status, step.run.error) is not None:
        return False  # e.g. a run that failed on its input: retrying cannot help
    step.retry_run()
    return True


def _record_webhook(step: Step, event: RunLevelEvent) -> bool:
    # Recorded whatever the run's state (it is over by then): a delivery log, deduplicated.
    assert isinstance(event, WebhookAttempted)
    record = event.model_dump(exclude={"run_id"})
    if record in step.run.notifications:
        return False
    step.run.notifications.append(record)
    return True


def _admitted(step: Step, event: RunLevelEvent) -> bool:
    assert isinstance(event, LimitGranted)
    return step.admitted(event)


def _refused(step: Step, event: RunLevelEvent) -> bool:
    assert isinstance(event, LimitRefused)
    return step.refused(event)


def _ignored(step: Step, event: object) -> bool:
    return False


_QUEUED, _RUNNING, _SUCCEEDED = RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED
_RUN_FAILED, _RUN_CANCELLED = RunStatus.FAILED, RunStatus.CANCELLED
_ENDED = (_SUCCEEDED, _RUN_FAILED, _RUN_CANCELLED)

RUN_RULES: Mapping[RunLevel, Mapping[RunStatus, RunRule]] = {
    RunLevel.CANCEL: {
        _QUEUED: _cancel,
        _RUNNING: _cancel,
        # Too late: the run ended on its own (or was cancelled already).
        **dict.fromkeys(_ENDED, _ignored),
    },
    RunLevel.RETRY: {
        _RUN_FAILED: _retry,
        _RUN_CANCELLED: _retry,
        # Only a run that ended badly can be retried.
        _QUEUED: _ignored,
        _RUNNING: _ignored,
        _SUCCEEDED: _ignored,
    },
    RunLevel.WEBHOOK: {status: _record_webhook for status in RunStatus},
    # A limiter's answer to the run's own request. Once the run is admitted (or has ended, in
    # which case its request was abandoned and the answer handled before this table) there is
    # nothing left to answer: a duplicate.
    RunLevel.GRANTED: {_QUEUED: _admitted, _RUNNING: _ignored, **dict.fromkeys(_ENDED, _ignored)},
    RunLevel.REFUSED: {_QUEUED: _refused, _RUNNING: _ignored, **dict.fromkeys(_ENDED, _ignored)},
}


# ---- node events -----------------------------------------------------------------------------

NodeRule = Callable[[Step, NodeState, NodeEventData], bool]


def node_event_kind(event: NodeEventData) -> NodeEvent:
    if isinstance(event, TaskStarted):
        return NodeEvent.STARTED
    if isinstance(event, TaskCompleted):
        return NodeEvent.COMPLETED
    if isinstance(event, TaskFailed):
        return NodeEvent.FAILED
    if isinstance(event, WaitMatched):
        return NodeEvent.WAIT_MATCHED
    if isinstance(event, LimitGranted):
        return NodeEvent.GRANTED
    return {
        "retry": NodeEvent.RETRY_DUE,
        "sleep": NodeEvent.SLEEP_DUE,
        "deadline": NodeEvent.DEADLINE,
        "start": NodeEvent.START_DUE,
    }[event.kind]


def _apply_node_event(step: Step, event: NodeEventData) -> bool:
    run = step.run
    node = run.nodes.get(event.node_id or "")
    if node is None:
        raise EventRejected(
            f"run {run.run_id!r} (workflow {run.workflow!r}) has no node {event.node_id!r}"
        )
    if isinstance(event, TaskCompleted | TaskFailed) and early.is_early(run, node, event):
        return early.keep(node, event)  # applied once the machine dispatches that attempt
    if run.status != RunStatus.RUNNING or node.attempt != event.attempt or not node.attempts:
        return False
    kind = node_event_kind(event)
    rule = NODE_RULES[kind].get(node.status)
    if rule is None:
        raise IllegalTransition(f"no rule for a {kind} event on a {node.status} node")
    return rule(step, node, event)


def _apply_kept_results(step: Step) -> None:
    """Results kept for attempts this transition dispatched (core/early.py), applied now as
    if the worker had answered at once; applying one may dispatch more."""
    while step.sent_early:
        node = step.sent_early.pop(0)
        result = early.take(node)
        if result is None:
            continue
        early.withdraw_dispatch(step.out, node.key, result.attempt)
        NODE_RULES[node_event_kind(result)][node.status](step, node, result)


def _started(step: Step, node: NodeState, event: NodeEventData) -> bool:
    assert isinstance(event, TaskStarted)
    step.started(node, event.worker)
    return True


def _completed(step: Step, node: NodeState, event: NodeEventData) -> bool:
    assert isinstance(event, TaskCompleted)
    attempt = node.attempts[-1]
    step.completed(node, event.output, event.worker)
    step.ran_for(attempt, event.ran_s)
    return True


def _failed(step: Step, node: NodeState, event: NodeEventData) -> bool:
    assert isinstance(event, TaskFailed)
    attempt = node.attempts[-1]
    step.failed(node, event.error, event.worker)
    step.ran_for(attempt, event.ran_s)
    return True


def _wait_matched(step: Step, node: NodeState, event: NodeEventData) -> bool:
    assert isinstance(event, WaitMatched)
    if step.compiled(node).kind != "wait_for":
        return False  # names a running node that waits for nothing: changes nothing
    step.completed(node, event.event, "event")
    return True


def _retry_due(step: Step, node: NodeState, event: NodeEventData) -> bool:
    step.dispatch(node, node.attempt + 1, node.input)
    return True


def _sleep_due(step: Step, node: NodeState, event: NodeEventData) -> bool:
    step.completed(node, {"slept_until": iso_utc(step.now)}, "timer")
    return True


def _deadline(step: Step, node: NodeState, event: NodeEventData) -> bool:
    step.deadline_passed(node)
    return True


def _not_started(step: Step, node: NodeState, event: NodeEventData) -> bool:
    step.not_started_in_time(node)
    return True


def _granted(step: Step, node: NodeState, event: NodeEventData) -> bool:
    assert isinstance(event, LimitGranted)
    return step.node_granted(node, event)


def _stale(step: Step, node: NodeState, event: NodeEventData) -> bool:
    return False


_W, _D, _R, _RT = NodeStatus.WAITING, NodeStatus.DISPATCHED, NodeStatus.RUNNING, NodeStatus.RETRYING
_S, _F, _SK, _C = NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED
_Q = NodeStatus.QUEUED

# Why the `_stale` pairs happen (every one can be produced by a real bus):
#   _S _F _C  the attempt already ended: a duplicate, or a result racing a timeout/cancel;
#   _W _SK    the run was retried after this attempt (the node waits again), or never ran it;
#   _RT       the attempt failed and waits for its retry: its late start or duplicate result;
#   _D _R     for timers: a timer whose cancellation raced its firing;
#   _Q        a queued attempt was never dispatched: nothing of it can start, end or time out;
#   GRANTED   a grant for anything but a queued attempt is a duplicate (an abandoned request's
#             grant is handled before the table, in `advance`).
NODE_RULES: Mapping[NodeEvent, Mapping[NodeStatus, NodeRule]] = {
    NodeEvent.STARTED: {
        _D: _started,
        _R: _stale,  # a duplicate start
        **dict.fromkeys((_W, _Q, _RT, _S, _F, _SK, _C), _stale),
    },
    NodeEvent.COMPLETED: {
        _D: _completed,  # a result with no start before it (the start was lost or is late)
        _R: _completed,
        **dict.fromkeys((_W, _Q, _RT, _S, _F, _SK, _C), _stale),
    },
    NodeEvent.FAILED: {
        _D: _failed,
        _R: _failed,
        **dict.fromkeys((_W, _Q, _RT, _S, _F, _SK, _C), _stale),
    },
    NodeEvent.WAIT_MATCHED: {
        _R: _wait_matched,
        **dict.fromkeys((_W, _Q, _D, _RT, _S, _F, _SK, _C), _stale),
    },
    NodeEvent.RETRY_DUE: {
        _RT: _retry_due,
        **dict.fromkeys((_W, _Q, _D, _R, _S, _F, _SK, _C), _stale),
    },
    NodeEvent.SLEEP_DUE: {
        _R: _sleep_due,
        **dict.fromkeys((_W, _Q, _D, _RT, _S, _F, _SK, _C), _stale),
    },
    NodeEvent.DEADLINE: {
        _D: _deadline,
        _R: _deadline,
        **dict.fromkeys((_W, _Q, _RT, _S, _F, _SK, _C), _stale),
    },
    NodeEvent.GRANTED: {
        _Q: _granted,
        **dict.fromkeys((_W, _D, _R, _RT, _S, _F, _SK, _C), _stale),
    },
    NodeEvent.START_DUE: {
        _D: _not_started,
        _R: _stale,  # it started in time: the timer's cancellation raced its firing
        **dict.fromkeys((_W, _Q, _RT, _S, _F, _SK, _C), _stale),
    },
}
