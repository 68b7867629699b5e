"""What a transition asks the shell to do: plain frozen values, turned into outbox rows by
`core.outbox` and carried out by the engine after the transition is committed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from events.models import WireModel

# "start": an attempt's schedule-to-start timeout (cancelled when a worker starts it).
TimerKind = Literal["retry", "deadline", "sleep", "start"]


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send attempt `attempt` of node `node_key` to the workers serving `task` on `queue`."""

    run_id: str
    node_key: str
    attempt: int
    task: str
    queue: str
    input: Any
    timeout_s: float | None


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Deliver a timer.fired event about (run, node, attempt) at `due_at` (durably)."""

    timer_id: str
    due_at: float
    run_id: str
    kind: TimerKind
    node_key: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer_id: str


@dataclass(frozen=True, slots=True)
class Emit:
    """Publish an event about the run (run.succeeded, task.cancel-requested, ...)."""

    event_type: str
    run_id: str
    data: WireModel
    key: str  # makes the event id deterministic: derived from (run, key)


@dataclass(frozen=True, slots=True)
class StartChild:
    """Start `workflow` as a child run (`child_run_id` is derived from the parent attempt)."""

    run_id: str
    node_key: str
    attempt: int
    workflow: str
    version: int | None
    input: Any
    child_run_id: str


@dataclass(frozen=True, slots=True)
class StartWait:
    """Remember that (run, node, attempt) waits for an ingested event of `type` whose
    attributes equal `match`."""

    run_id: str
    node_key: str
    attempt: int
    type: str
    match: dict[str, str]


@dataclass(frozen=True, slots=True)
class CancelWait:
    run_id: str
    node_key: str


Command = Dispatch | StartTimer | CancelTimer | Emit | StartChild | StartWait | CancelWait
