"""Event types and the pydantic model of each type's data.

Type names are reverse-DNS and always have exactly two tokens after `io.conveyor.`
(`<noun>.<verb>`), which is what lets subjects carry them as two subject tokens.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.ids import TOKEN_PATTERN

PREFIX = "io.conveyor."
# Payloads over this size travel through the artifacts object store (NATS' max_payload is 1 MiB).
INLINE_LIMIT_BYTES = 256 * 1024

RUN_REQUESTED = "io.conveyor.run.requested"
RUN_CANCEL_REQUESTED = "io.conveyor.run.cancel-requested"
RUN_RETRY_REQUESTED = "io.conveyor.run.retry-requested"
RUN_SUCCEEDED = "io.conveyor.run.succeeded"
RUN_FAILED = "io.conveyor.run.failed"
RUN_CANCELLED = "io.conveyor.run.cancelled"
TASK_DISPATCHED = "io.conveyor.task.dispatched"
TASK_STARTED = "io.conveyor.task.started"
TASK_COMPLETED = "io.conveyor.task.completed"
TASK_FAILED = "io.conveyor.task.failed"
TASK_CANCEL_REQUESTED = "io.conveyor.task.cancel-requested"
TIMER_FIRED = "io.conveyor.timer.fired"
WAIT_MATCHED = "io.conveyor.wait.matched"
WEBHOOK_ATTEMPTED = "io.conveyor.webhook.attempted"
WORKER_HEARTBEAT = "io.conveyor.worker.heartbeat"


# A run id is one subject token (events are published on `<ns>.evt.<p>.<noun>.<verb>.<run_id>`):
# checked where a message is read, so a message naming another kind of run id is refused as
# malformed (and parked) instead of failing later, when a reply cannot be published.
RunId = Annotated[str, Field(pattern=rf"^{TOKEN_PATTERN}$")]


class WireModel(BaseModel):
    # Unknown fields are ignored, not refused: a newer publisher may add fields and an older
    # reader must keep working. Missing or mistyped fields are refused with a clear error.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ErrorInfo(WireModel):
    """A failure, typed: retryability lives in a field, never parsed out of the message."""

    type: str
    message: str
    traceback: str | None = None
    retryable: bool = True
    node_id: str | None = None
    details: Any = None


class ParentRef(WireModel):
    """The node of another run that this run executes (a sub-workflow)."""

    run_id: RunId
    node_id: str
    attempt: int = Field(1, ge=1)


class RunRequested(WireModel):
    workflow: str = Field(min_length=1)
    version: int | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    run_id: RunId | None = None
    parent: ParentRef | None = None


def requested_run_id(request: RunRequested, source: str, event_id: str) -> str:
    """The run a run.requested event is about: its explicit `run_id`, else the one its
    idempotency key resolves to, else one derived from the event's source and id (so a
    redelivered or republished event never starts a second run)."""
    from events.ids import derived_id, run_id_for_key

    if request.run_id:
        return request.run_id
    if request.idempotency_key:
        return run_id_for_key(request.workflow, request.idempotency_key)
    return derived_id("event", source, event_id)


class RunCancelRequested(WireModel):
    run_id: RunId
    reason: str = "cancelled by request"


class RunRetryRequested(WireModel):
    """Re-run a failed or cancelled run from the nodes that did not succeed (same run id)."""

    run_id: RunId
    reason: str = "retried by request"


class LogLine(WireModel):
    """One log line emitted inside a task, published on `<ns>.log.<run_id>.<node_id>`."""

    run_id: RunId
    node_id: str
    attempt: int
    time: str
    level: str
    message: str
    logger: str | None = None
    traceparent: str | None = None


class RunSucceeded(WireModel):
    run_id: RunId
    workflow: str
    version: int
    output: Any = None


class RunFailed(WireModel):
    run_id: RunId
    workflow: str
    version: int
    error: ErrorInfo


class RunCancelled(WireModel):
    run_id: RunId
    workflow: str
    version: int
    reason: str


class TaskRef(WireModel):
    """Identifies one attempt of one node of one run: the unit of deduplication."""

    run_id: RunId
    node_id: str
    attempt: int = Field(ge=1)


class TaskDispatched(TaskRef):
    task: str
    queue: str
    input: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = None
    # Claim check: an input over the inline limit is in the artifacts object store under this
    # key (JSON), and `input` is empty.
    input_ref: str | None = None


class TaskStarted(TaskRef):
    worker: str


class TaskCompleted(TaskRef):
    worker: str
    output: Any = None
    output_ref: str | None = None  # claim check, as for TaskDispatched.input_ref
    # How long the attempt ran, when no task.started was sent for it (a short task's start is
    # folded into its result): the orchestrator dates the start from it, on its own clock.
    ran_s: float | None = Field(None, ge=0)


class TaskFailed(TaskRef):
    worker: str
    error: ErrorInfo
    ran_s: float | None = Field(None, ge=0)  # as for TaskCompleted


class TaskCancelRequested(TaskRef):
    reason: str


class TimerFired(WireModel):
    run_id: RunId
    timer_id: str
    # "start": the attempt's schedule-to-start timeout (no worker started it in time).
    kind: Literal["retry", "deadline", "sleep", "start"]
    node_id: str
    attempt: int


class WaitMatched(TaskRef):
    """An ingested event matched a node waiting for it; `event` is the CloudEvent as JSON."""

    event: dict[str, Any]


class WebhookAttempted(WireModel):
    """One attempt to deliver a run's outcome to a URL (recorded on the run, shown in status)."""

    run_id: RunId
    url: str
    outcome_event: str  # the id of the run event being delivered
    attempt: int
    delivered: bool
    final: bool  # delivered, or no attempt will follow
    status_code: int | None = None
    error: str | None = None
    at: str


class ServedTask(WireModel):
    queue: str
    task: str


class WorkerHeartbeat(WireModel):
    """A worker announcing itself, every `interval_s`, on `<ns>.worker.<worker>` (a stream that
    keeps the last one of each worker): who it is and what it serves, so that a task no running
    worker serves can be told apart from one that waits its turn."""

    worker: str  # the worker's id, a subject token; the `worker` of its task events
    host: str
    pid: int | None = None
    version: str  # free text: the SDK and its version, e.g. "conveyor-python 0.1.0"
    serves: list[ServedTask]
    concurrency: int = Field(ge=0)
    in_flight: int = Field(ge=0)
    isolated: int = Field(0, ge=0)  # of those, attempts run alone (suspected of crashing)
    started_at: str  # RFC 3339
    interval_s: float = Field(gt=0)
    # "stopped": its last word on a graceful exit (a killed worker just stops heartbeating).
    state: Literal["running", "draining", "stopped"] = "running"


DATA_MODELS: dict[str, type[WireModel]] = {
    WEBHOOK_ATTEMPTED: WebhookAttempted,
    WAIT_MATCHED: WaitMatched,
    RUN_REQUESTED: RunRequested,
    RUN_CANCEL_REQUESTED: RunCancelRequested,
    RUN_RETRY_REQUESTED: RunRetryRequested,
    RUN_SUCCEEDED: RunSucceeded,
    RUN_FAILED: RunFailed,
    RUN_CANCELLED: RunCancelled,
    TASK_DISPATCHED: TaskDispatched,
    TASK_STARTED: TaskStarted,
    TASK_COMPLETED: TaskCompleted,
    TASK_FAILED: TaskFailed,
    TASK_CANCEL_REQUESTED: TaskCancelRequested,
    TIMER_FIRED: TimerFired,
    WORKER_HEARTBEAT: WorkerHeartbeat,
}


def type_suffix(event_type: str) -> str:
    """`io.conveyor.task.completed` -> `task.completed` (two subject tokens)."""
    if not event_type.startswith(PREFIX) or event_type.count(".") != 3:
        raise ValueError(f"not a Conveyor event type: {event_type!r}")
    return event_type[len(PREFIX) :]
