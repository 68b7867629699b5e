"""The API's request and response bodies (pydantic), which is what `/openapi.json` documents.

Run and node shapes follow `orchestrator.core.status.run_status` — what `conveyor status --json`
prints — so a script can switch between the CLI and the API without rewriting its parsing.
Models of values that come from the store accept extra fields (`extra="allow"`): the store is
written by the engine, which may add fields before the API learns to name them, and a read
must not fail on that.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SINCE_RETRY = (
    "Attempts since the run's last manual retry: what the retry policy's max_attempts counts "
    "(not set on a mapped node: each child has its own budget)."
)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Problem(BaseModel):
    """Every error response: what went wrong, and each problem found when there are several."""

    detail: str
    problems: list[str] = Field(default_factory=list)


# ---- workflows -----------------------------------------------------------------------------


class DagNode(BaseModel):
    id: str
    kind: Literal["task", "sleep", "wait_for", "workflow"]
    task: str | None = Field(None, description="The task name (task nodes).")
    label: str = Field(description="What the node does, in a few words (for its box).")
    queue: str
    depth: int = Field(description="Column of the layered layout: longest path from a root.")
    deps: list[str]
    mapped: bool
    map_param: str | None = None
    conditional: bool
    max_attempts: int
    timeout_s: float | None = None


class DagEdge(BaseModel):
    source: str
    target: str


class Dag(BaseModel):
    nodes: list[DagNode] = Field(description="In topological order.")
    edges: list[DagEdge]
    depth: int = Field(description="Number of columns.")


class ScheduleInfo(BaseModel):
    cron: str
    timezone: str
    catchup: str
    input: dict[str, Any]
    next_at: list[float] = Field(description="The next fire instants (unix seconds).")


class NotifyInfo(BaseModel):
    """An outbound webhook, shown without its secret or any credentials in its URL."""

    url: str = Field(description="Scheme, host and path only.")
    on: list[str]
    signed: bool


class WorkflowSummary(BaseModel):
    name: str
    latest_version: int
    description: str
    nodes: int
    runs: dict[str, int] = Field(description="Stored runs of this workflow by status.")
    last_run: RunSummary | None = None
    schedules: int = 0
    triggers: int = Field(0, description="Event filters that start a run.")
    next_run_at: float | None = Field(None, description="The next scheduled instant, if any.")
    paused: bool = Field(False, description="Schedules paused (`conveyor schedules pause`).")


class WorkflowDetail(BaseModel):
    name: str
    version: int
    latest_version: int
    versions: list[int]
    description: str
    input_schema: dict[str, Any] | None = None
    spec: dict[str, Any] = Field(description="The registered WorkflowSpec (secrets redacted).")
    dag: Dag
    schedules: list[ScheduleInfo] = Field(default_factory=list)
    triggers: list[dict[str, Any]] = Field(
        default_factory=list, description="CloudEvents Subscriptions filters that start a run."
    )
    notify: list[NotifyInfo] = Field(default_factory=list)
    paused: bool = False


# ---- runs ----------------------------------------------------------------------------------


class ErrorBody(_Open):
    """A typed failure (events.ErrorInfo): type, message, traceback, retryable."""

    type: str
    message: str
    traceback: str | None = None
    retryable: bool | None = None
    node_id: str | None = None


class Attempt(_Open):
    attempt: int
    status: str
    dispatched_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    error: ErrorBody | None = None


class FailedChild(BaseModel):
    key: str
    error: ErrorBody


class Waiting(_Open):
    """Why a run or a node waits: the limit it is queued behind (docs/flow-control.md)."""

    reason: Literal["concurrency", "rate"]
    scope: Literal["run", "task", "rate"]
    limit: int
    per_s: float | None = Field(None, description="A rate limit's window, in seconds.")
    key: str = Field(description="The limit's key ('' when the limit has none).")
    since: float
    position: int | None = Field(None, description="1: next in line (when known).")
    holding: int | None = Field(None, description="How many hold the limit now.")
    queued: int | None = Field(None, description="How many wait for it now.")
    until: float | None = Field(None, description="A rate limit: when the next token frees.")


class NoWorker(BaseModel):
    """A node dispatched but not started whose task no live worker serves (by their heartbeats)."""

    queue: str
    task: str
    seconds: int = Field(description="How long its attempt has waited so far.")
    message: str = Field(
        description="e.g. \"no worker has served task 'train' (queue 'gpu') for 42 s: start a "
        'worker that serves it"'
    )


class NodeStatus(_Open):
    """One node of a run; a mapped node summarises its children (`children`: total and
    counts by status)."""

    status: str
    attempts: int = Field(description="Every attempt it had, across manual retries of the run.")
    attempts_since_retry: int | None = Field(None, description=SINCE_RETRY)
    attempt_history: list[Attempt]
    error: ErrorBody | None = None
    input: Any = None
    output: Any = None
    children: dict[str, int] | None = None
    failed_children: list[FailedChild] | None = None
    waiting: Waiting | None = None
    children_not_started: int | None = Field(
        None, description="A map with max_parallel: children waiting for a place."
    )
    no_worker: NoWorker | None = Field(
        None,
        description="Set while the node waits for a worker that no running worker could be.",
    )


class Trigger(_Open):
    """What started the run, from its run.requested event (see orchestrator.core.trigger)."""

    kind: Literal["cron", "event", "webhook", "parent", "cli", "api", "client"]
    source: str = Field(description="The request's CloudEvents source.")
    event_id: str = Field(description="The request's CloudEvents id.")
    subject: str | None = Field(None, description="Its subject (a cron run: the instant).")
    by: str = Field(description="Who or what, in a few words.")
    detail: dict[str, Any] = Field(default_factory=dict)
    traceparent: str | None = Field(None, description="The caller's trace context, if any.")


class RunDetail(_Open):
    run_id: str
    workflow: str
    version: int
    status: str
    input: Any = None
    output: Any = None
    error: ErrorBody | None = None
    created_at: float
    updated_at: float
    finished_at: float | None = None
    resumed_at: float | None = Field(None, description="The last manual retry's resume, if any.")
    duration_s: float | None = Field(
        None,
        description="Active time: up to its end (or, while it runs, its last update), without "
        "the idle gap before a manual retry.",
    )
    idempotency_key: str | None = None
    priority: int = Field(5, description="1-10, higher first, where the run waits behind limits.")
    waiting: Waiting | None = None
    trigger: Trigger | None = None
    nodes: dict[str, NodeStatus] = Field(description="Every node of the spec, in spec order.")


class RunSummary(BaseModel):
    run_id: str
    workflow: str
    version: int
    status: str
    created_at: float
    updated_at: float
    finished_at: float | None = None
    error: ErrorBody | None = None
    idempotency_key: str | None = None
    trigger: Trigger | None = None


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next (older) page; null on the last page."
    )


class RunCounts(BaseModel):
    total: int
    by_status: dict[str, int]


class NodeDetail(BaseModel):
    """One node (or one child of a mapped node, key `<id>[<index>]`) with its inputs and
    outputs."""

    key: str
    node_id: str
    index: int | None = None
    status: str
    attempt: int
    attempts_since_retry: int | None = Field(None, description=SINCE_RETRY)
    attempt_history: list[Attempt]
    input: Any = None
    output: Any = None
    error: ErrorBody | None = None
    children: dict[str, int] | None = None
    waiting: Waiting | None = None


class ChildSummary(BaseModel):
    key: str
    index: int
    item: Any = Field(None, description="The value this child was mapped over (summarised).")
    status: str
    attempt: int
    attempt_history: list[Attempt]
    error: ErrorBody | None = None


class ChildPage(BaseModel):
    children: list[ChildSummary]
    next_after: int | None = Field(
        None, description="Pass as `after` for the next page; null on the last page."
    )


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(None, ge=1, description="Pin a version; latest when omitted.")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=256, description="The same key gives the same run."
    )
    run_id: str | None = Field(None, description="Choose the run id ([A-Za-z0-9_-], 1-128).")
    priority: int | None = Field(
        None, ge=1, le=10, description="1-10, higher first (default: the workflow's, else 5)."
    )


class Accepted(BaseModel):
    """The request is durably in JetStream; the orchestrator applies it asynchronously."""

    run_id: str
    action: Literal["trigger", "cancel", "retry"]
    url: str = Field(description="Where to follow the run.")


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=1000)


# ---- logs ----------------------------------------------------------------------------------


class LogEntry(BaseModel):
    seq: int = Field(description="Stream sequence: pass the last one as `after` to continue.")
    run_id: str
    node_id: str
    attempt: int
    time: str
    level: str
    message: str
    logger: str | None = None


class LogPage(BaseModel):
    lines: list[LogEntry]
    next_after: int = Field(description="The last sequence read; pass as `after` to continue.")
    more: bool = Field(description="True when the page stopped at its limit, not at the end.")


WorkflowSummary.model_rebuild()


# ---- flow control --------------------------------------------------------------------------


class FlowEntity(_Open):
    """A limiter (one limit for one key: what it holds and queues) or a collector (a debounce
    or a batch of one event-triggered workflow for one key: what it holds)."""

    entity_id: str
    kind: Literal["limiter", "collector"]
    key: str
    scope: str | None = Field(None, description="A limiter's: run, task or rate.")
    name: str | None = Field(None, description="A limiter's workflow or task.")
    limit: int | None = None
    per_s: float | None = None
    holding: int | None = None
    waiting: int | None = None
    workflow: str | None = Field(None, description="A collector's workflow.")
    mode: str | None = Field(None, description="A collector's: debounce or batch.")
    count: int | None = Field(None, description="A collector's events held.")
    timer_due: float | None = Field(
        None, description="When its timer fires: a rate window moves on, a window closes."
    )
