"""The state of one run, as the machine reads and writes it, and the commands it produces.

Plain slotted dataclasses (not pydantic): the engine keeps hot runs in memory and the machine
updates them in place, so a transition costs what it touches, not the size of the run — a
fan-out of 100,000 children must not be copied on every completion. The machine reports which
node keys it changed (`Transition.changed`) so the store writes only those rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.core.commands import Command
from orchestrator.core.expressions import NODE_ID_PATTERN
from orchestrator.core.statuses import NodeStatus, RunStatus


@dataclass(slots=True)
class Gate:
    """A slot, or a rate token, asked of a limiter (docs/flow-control.md) for a run or for one
    attempt of a node: `requested`, then `held` once granted, then `released`."""

    scope: str  # "run" (run concurrency), "task" (task concurrency) or "rate"
    limiter: str  # the limiter's id: where the request went
    request: str  # the request's id (deterministic)
    key: str
    limit: int
    since: float  # when it was asked for
    per_s: float | None = None  # rate limits: the window
    state: str = "requested"
    granted_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gate:
        return cls(**d)


@dataclass(slots=True)
class Attempt:
    attempt: int
    status: NodeStatus
    dispatched_at: float  # when it was opened: queued behind a limit, or dispatched
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    error: dict[str, Any] | None = None
    queued_at: float | None = None  # opened behind a limit; dispatched_at is then the grant

    def to_dict(self) -> dict[str, Any]:
        out = {
            "attempt": self.attempt,
            "status": self.status,
            "dispatched_at": self.dispatched_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "worker": self.worker,
            "error": self.error,
        }
        if self.queued_at is not None:
            out["queued_at"] = self.queued_at
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        return cls(**{**d, "status": NodeStatus(d["status"])})


@dataclass(slots=True)
class NodeState:
    key: str  # the node id, or "<id>[<index>]" for a child of a mapped node
    node_id: str
    status: NodeStatus = NodeStatus.WAITING
    attempt: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    index: int | None = None  # position among the children of a mapped node
    children: int | None = None  # for a mapped parent: how many children
    children_done: int = 0
    # The attempt from which the retry policy's budget counts (moves on a manual run retry).
    first_attempt: int = 1
    # The current attempt's gates, asked in order before it is dispatched (flow control).
    gates: list[Gate] = field(default_factory=list)
    # A mapped parent with max_parallel: the next child to start, and how many are started and
    # not ended (so that each start costs O(1), not a scan of 100,000 children).
    next_child: int = 0
    children_active: int = 0
    # Results for attempts not dispatched yet, applied when they are (core/early.py).
    early: list[dict[str, Any]] = field(default_factory=list)

    @property
    def attempts_since_retry(self) -> int:
        """Attempts since the run's last manual retry: what the retry policy's max counts."""
        return max(0, self.attempt - self.first_attempt + 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "node_id": self.node_id,
            "status": self.status,
            "attempt": self.attempt,
            "attempts": [a.to_dict() for a in self.attempts],
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "index": self.index,
            "children": self.children,
            "children_done": self.children_done,
            "first_attempt": self.first_attempt,
            **self._flow_dict(),
        }

    def _flow_dict(self) -> dict[str, Any]:
        # Written only when used: the rows of the many nodes without flow control stay small.
        out: dict[str, Any] = {}
        if self.gates:
            out["gates"] = [g.to_dict() for g in self.gates]
        if self.next_child or self.children_active:
            out["next_child"] = self.next_child
            out["children_active"] = self.children_active
        if self.early:
            out["early"] = self.early
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeState:
        d = dict(d)
        d["status"] = NodeStatus(d["status"])
        d["attempts"] = [Attempt.from_dict(a) for a in d.get("attempts", [])]
        d["gates"] = [Gate.from_dict(g) for g in d.get("gates", [])]
        return cls(**d)


@dataclass(slots=True)
class RunState:
    run_id: str
    workflow: str
    version: int
    status: RunStatus
    input: dict[str, Any]
    created_at: float
    updated_at: float
    output: Any = None
    error: dict[str, Any] | None = None
    finished_at: float | None = None
    idempotency_key: str | None = None
    parent: dict[str, Any] | None = None
    traceparent: str | None = None  # W3C trace context of the trigger (see events.tracing)
    trigger: dict[str, Any] | None = None  # what started the run (see core.trigger)
    notifications: list[dict[str, Any]] = field(default_factory=list)  # outbound webhooks
    nodes: dict[str, NodeState] = field(default_factory=dict)
    # The spec's nodes in topological order: how the run is shown (store rows come back sorted
    # by key, which would list a pipeline alphabetically).
    node_order: list[str] = field(default_factory=list)
    # Flow control (docs/flow-control.md): the run's priority (1-10), its run concurrency slot,
    # how many it asked for so far (a manual retry asks again), and the slots it asked for and
    # no longer wants, each released when its grant arrives.
    priority: int = 5
    gate: Gate | None = None
    admissions: int = 0
    abandoned: dict[str, Gate] = field(default_factory=dict)
    # A manual retry resumes an ended run: its active time is counted in spans (from the request
    # or a resume to the end), so the idle gap before a retry is not part of its duration.
    resumed_at: float | None = None  # the last resume, if any: the current span's start
    earlier_active_s: float = 0.0  # the spans before the current one

    def active_s(self) -> float:
        """Seconds the run has been active: its earlier spans, and the current one up to its end
        (or, while it runs, up to its last applied event)."""
        since = self.created_at if self.resumed_at is None else self.resumed_at
        until = self.updated_at if self.finished_at is None else self.finished_at
        return self.earlier_active_s + max(0.0, until - since)

    def header_dict(self) -> dict[str, Any]:
        """Everything but the nodes (stored in their own rows)."""
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "version": self.version,
            "status": self.status,
            "input": self.input,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "output": self.output,
            "error": self.error,
            "finished_at": self.finished_at,
            "idempotency_key": self.idempotency_key,
            "parent": self.parent,
            "node_order": self.node_order,
            "traceparent": self.traceparent,
            "trigger": self.trigger,
            "notifications": self.notifications,
            "priority": self.priority,
            "gate": self.gate.to_dict() if self.gate is not None else None,
            "admissions": self.admissions,
            "abandoned": {r: g.to_dict() for r, g in self.abandoned.items()},
            "resumed_at": self.resumed_at,
            "earlier_active_s": self.earlier_active_s,
        }

    @classmethod
    def from_parts(cls, header: dict[str, Any], nodes: list[NodeState]) -> RunState:
        by_key = {n.key: n for n in nodes}
        order = header.get("node_order", [])
        ordered = {k: by_key.pop(k) for k in order if k in by_key}
        ordered.update(sorted(by_key.items(), key=lambda kv: (kv[1].node_id, kv[1].index or 0)))
        flow = {
            "gate": Gate.from_dict(header["gate"]) if header.get("gate") else None,
            "abandoned": {r: Gate.from_dict(g) for r, g in header.get("abandoned", {}).items()},
        }
        return cls(**{**header, **flow, "status": RunStatus(header["status"])}, nodes=ordered)


# A node id, or `<id>[<index>]` for a child of a mapped node (for schemas: unanchored).
NODE_KEY_PATTERN = NODE_ID_PATTERN + r"(\[[0-9]{1,9}\])?"


def child_key(node_id: str, index: int) -> str:
    return f"{node_id}[{index}]"


@dataclass(slots=True)
class Transition:
    run: RunState | None
    commands: list[Command] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # node keys written
    created: bool = False  # the event created the run
    applied: bool = True  # False: the event was stale or a duplicate and changed nothing
