"""Commands -> outbox rows: what a batch of transitions writes besides the runs (pure).

A transition's commands become, in the same sqlite transaction as the new state:
- outbox rows — whole encoded NATS messages (subject, headers, body) with a deterministic
  `Nats-Msg-Id`, due now (dispatches, run events, child run requests) or later (timers);
- cancellations of timer rows not yet due;
- rows of the `waits` table (nodes waiting for an ingested event);
- claim-checked payloads (a dispatch input over the inline limit) to put in the object store
  before the commit.

Deterministic all the way down: the event ids come from (run, node, attempt) or the command's
key, the event time is the transition's `now`, the trace span ids are derived from the ids —
so re-translating the same commands gives byte-identical rows, and a re-publish after a crash is
dropped by JetStream's duplicate window.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from events.codec import encode
from events.envelope import CloudEvent
from events.ids import artifact_key
from events.models import (
    INLINE_LIMIT_BYTES,
    RUN_REQUESTED,
    TASK_DISPATCHED,
    TIMER_FIRED,
    ParentRef,
    RunRequested,
    TaskDispatched,
    TimerFired,
    WireModel,
)
from events.topology import Topology
from events.tracing import child_traceparent
from orchestrator.core.commands import (
    CancelTimer,
    CancelWait,
    Command,
    Dispatch,
    Emit,
    StartChild,
    StartTimer,
    StartWait,
)
from orchestrator.core.rules import iso_utc
from orchestrator.core.state import RunState

SOURCE = "conveyor/orchestrator"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: str
    subject: str
    headers: dict[str, str]
    body: bytes
    due_at: float


@dataclass(frozen=True, slots=True)
class Wait:
    """A node waiting for an ingested event of `type` whose attributes equal `match`."""

    run_id: str
    node_key: str
    attempt: int
    type: str
    match: dict[str, str]


@dataclass(slots=True)
class Batch:
    """Everything one fetched batch changes, written in one transaction."""

    runs: dict[str, RunState] = field(default_factory=dict)
    changed_nodes: dict[str, set[str]] = field(default_factory=dict)
    processed: list[str] = field(default_factory=list)
    outbox: dict[str, OutboxRow] = field(default_factory=dict)
    outbox_deleted: list[str] = field(default_factory=list)
    waits: dict[tuple[str, str], Wait | None] = field(default_factory=dict)  # None: remove
    # Claim-checked payloads to put in the object store before the commit (not in sqlite).
    artifacts: dict[str, bytes] = field(default_factory=dict)
    # Stream positions read up to, committed with what was applied (a projection's reader).
    positions: dict[str, int] = field(default_factory=dict)

    def stage_run(self, run: RunState, changed: Iterable[str]) -> None:
        self.runs[run.run_id] = run
        self.changed_nodes.setdefault(run.run_id, set()).update(changed)

    def add_outbox(self, row: OutboxRow) -> None:
        self.outbox[row.id] = row

    def cancel_outbox(self, row_id: str) -> None:
        # A timer started and cancelled within one batch never reaches the table.
        if self.outbox.pop(row_id, None) is None:
            self.outbox_deleted.append(row_id)

    def __bool__(self) -> bool:
        return bool(
            self.runs
            or self.processed
            or self.outbox
            or self.outbox_deleted
            or self.waits
            or self.positions
        )


def stage_commands(
    batch: Batch,
    commands: Sequence[Command],
    *,
    now: float,
    trace: str | None,
    topology: Topology,
) -> None:
    """Add what `commands` (of one transition, applied at `now`, in the run's trace) write."""
    for command in commands:
        if isinstance(command, Dispatch):
            _dispatch(batch, command, now, trace, topology)
        elif isinstance(command, StartTimer):
            fired = TimerFired(
                run_id=command.run_id,
                timer_id=command.timer_id,
                kind=command.kind,
                node_id=command.node_key,
                attempt=command.attempt,
            )
            subject = topology.event_subject(TIMER_FIRED, command.run_id)
            batch.add_outbox(
                _row(subject, TIMER_FIRED, command.timer_id, fired, command.due_at, now, trace)
            )
        elif isinstance(command, CancelTimer):
            batch.cancel_outbox(command.timer_id)
        elif isinstance(command, StartWait):
            batch.waits[(command.run_id, command.node_key)] = Wait(
                command.run_id, command.node_key, command.attempt, command.type, command.match
            )
        elif isinstance(command, CancelWait):
            batch.waits[(command.run_id, command.node_key)] = None
        elif isinstance(command, StartChild):
            _start_child(batch, command, now, trace, topology)
        else:
            _emit(batch, command, now, trace, topology)


def _dispatch(
    batch: Batch, command: Dispatch, now: float, trace: str | None, topology: Topology
) -> None:
    data = TaskDispatched(
        run_id=command.run_id,
        node_id=command.node_key,
        attempt=command.attempt,
        task=command.task,
        queue=command.queue,
        input=command.input,
        timeout=command.timeout_s,
    )
    if len(data.model_dump_json().encode()) > INLINE_LIMIT_BYTES:
        # A fan-in over thousands of outputs: the input goes by claim check.
        payload = json.dumps(command.input, separators=(",", ":")).encode()
        key = artifact_key(payload)
        batch.artifacts[key] = payload
        data = data.model_copy(update={"input": {}, "input_ref": key})
    event_id = f"{command.run_id}:{command.node_key}:{command.attempt}:dispatch"
    span = trace and child_traceparent(trace, command.node_key, str(command.attempt))
    batch.add_outbox(
        _row(
            # The task's own subject: only the workers that serve it ever receive it.
            topology.task_subject(command.queue, command.task),
            TASK_DISPATCHED,
            event_id,
            data,
            now,
            now,
            span,
        )
    )


def _start_child(
    batch: Batch, command: StartChild, now: float, trace: str | None, topology: Topology
) -> None:
    request = RunRequested(
        workflow=command.workflow,
        version=command.version,
        input=command.input if isinstance(command.input, dict) else {},
        run_id=command.child_run_id,
        parent=ParentRef(run_id=command.run_id, node_id=command.node_key, attempt=command.attempt),
    )
    span = trace and child_traceparent(trace, command.node_key, str(command.attempt))
    subject = topology.event_subject(RUN_REQUESTED, command.child_run_id)
    event_id = f"{command.child_run_id}:requested"
    batch.add_outbox(
        _row(subject, RUN_REQUESTED, event_id, request, now, now, span, run=command.child_run_id)
    )


def _emit(batch: Batch, command: Emit, now: float, trace: str | None, topology: Topology) -> None:
    subject = topology.event_subject(command.event_type, command.run_id)
    event_id = f"{command.run_id}:{command.key}"
    # Run outcomes name their workflow in ce-subject, so other workflows can be triggered by
    # them with a plain attribute filter.
    workflow = getattr(command.data, "workflow", None)
    batch.add_outbox(
        _row(
            subject,
            command.event_type,
            event_id,
            command.data,
            now,
            now,
            trace,
            run=command.run_id,
            ce=workflow,
        )
    )


def _row(
    nats_subject: str,
    event_type: str,
    event_id: str,
    data: WireModel,
    due_at: float,
    now: float,
    traceparent: str | None,
    *,
    run: str | None = None,
    ce: str | None = None,  # the CloudEvent's subject attribute
) -> OutboxRow:
    run_id = run if run is not None else str(getattr(data, "run_id", ""))
    extensions = {"runid": run_id}
    if traceparent:
        extensions["traceparent"] = traceparent
    event = CloudEvent.create(
        event_type,
        SOURCE,
        data,
        id=event_id,
        subject=ce,
        time=iso_utc(now),
        extensions=extensions,
    )
    headers, body = encode(event)
    return OutboxRow(event_id, nats_subject, headers, body, due_at)
