"""Response bodies of the operator views (documented in `/openapi.json` like the others): a
run's event history and timeline, task queues and live workers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

# ---- a run's event history -----------------------------------------------------------------


class HistoryEvent(BaseModel):
    """One CloudEvent of the run as it sits in the event stream: attributes, every NATS
    header, and its data (parsed JSON; a large value summarised)."""

    seq: int = Field(description="Stream sequence: pass the last one as `after` to continue.")
    nats_subject: str
    id: str | None = None
    type: str | None = None
    source: str | None = None
    subject: str | None = Field(None, description="The CloudEvent's `subject` attribute.")
    time: str | None = None
    node_id: str | None = None
    attempt: int | None = None
    extensions: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    data: Any = None
    size: int = Field(description="The body's size in bytes.")
    problem: str | None = Field(None, description="Why it is not a valid CloudEvent.")


class HistoryPage(BaseModel):
    events: list[HistoryEvent]
    next_after: int = Field(description="The last sequence read; pass as `after` to continue.")
    more: bool = Field(description="True when the page stopped at its limit, not at the end.")


# ---- a run's timeline ----------------------------------------------------------------------


class TimelineAttempt(BaseModel):
    attempt: int
    status: str
    dispatched_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    error_type: str | None = None


class Density(BaseModel):
    """A mapped node's children over time: how many ran in each of `bins` equal slices of
    [start, end]."""

    start: float
    end: float
    bins: list[int]
    peak: int


class TimelineLane(BaseModel):
    node_id: str
    status: str
    mapped: bool = False
    attempts: list[TimelineAttempt] = Field(
        default_factory=list, description="A node's attempts (empty for a mapped node)."
    )
    children: dict[str, int] | None = Field(None, description="A mapped node's children.")
    density: Density | None = None


class Timeline(BaseModel):
    run_id: str
    status: str
    created_at: float
    finished_at: float | None = None
    now: float = Field(description="The server's clock: where unfinished bars end.")
    lanes: list[TimelineLane] = Field(description="One per node, in the spec's order.")


# ---- queues and workers --------------------------------------------------------------------


class QueueState(BaseModel):
    """A task queue's durable consumer on the tasks stream and its backlog."""

    consumer: str
    queue: str | None = Field(None, description="The queue its subject filter names.")
    task: str | None = Field(None, description="The task, for a consumer of one task.")
    filters: list[str]
    pending: int = Field(description="Waiting, not yet delivered to any worker.")
    ack_pending: int = Field(description="Delivered, not yet settled: running now.")
    redelivered: int
    waiting_pulls: int = Field(description="Idle workers' pull requests parked on it.")
    max_ack_pending: int = Field(description="The pool's cap on tasks in flight.")
    oldest_waiting_s: float | None = Field(
        None, description="Age of the oldest message not yet delivered."
    )
    last_active: float | None = Field(None, description="Last delivery (unix seconds).")


class QueuesPage(BaseModel):
    queues: list[QueueState]
    dead_letters: int = Field(description="Messages parked on the dead-letter stream.")


class ServedTask(BaseModel):
    queue: str
    task: str


class WorkerState(BaseModel):
    """A worker as its last heartbeat tells it (`io.conveyor.worker.heartbeat`)."""

    worker: str = Field(description="Its id: the `worker` of the task events it publishes.")
    host: str
    pid: int | None = None
    version: str
    serves: list[ServedTask]
    queues: list[str]
    tasks: list[str]
    concurrency: int
    in_flight: int
    isolated: int = Field(0, description="Of those, attempts run alone (suspected of crashing).")
    started_at: float | None = None
    last_heartbeat: float = Field(description="When the server stored its last heartbeat.")
    interval_s: float
    state: str = Field(description="What it said: running, draining or stopped.")
    live: bool = Field(description="Running and heard from within 3 heartbeat intervals.")
    status: Literal["alive", "draining", "gone"]


class Unserved(BaseModel):
    """A registered workflow some of whose tasks no live worker serves: its runs will wait."""

    workflow: str
    version: int
    tasks: list[ServedTask]


class WorkersPage(BaseModel):
    workers: list[WorkerState] = Field(description="Live ones first, then the gone, newest first.")
    unserved: list[Unserved]
