"""The statuses of runs and nodes, and the graph of moves between them.

    run:   running ──▶ succeeded | failed | cancelled
    node:  waiting ──▶ dispatched ──▶ running ──▶ succeeded | failed
              │            │   ▲         │
              │            │   └─ retrying ◀┘ (a failed attempt with attempts left)
              │            └──▶ succeeded | failed | retrying (a result with no start before
              │                 it; no start in time: the schedule-to-start timeout)
              ├──▶ running     (a sleep, a wait, a mapped parent: no dispatch of their own)
              ├──▶ succeeded   (a map over an empty list)
              ├──▶ failed      (an input or condition that cannot be evaluated)
              └──▶ skipped     (a condition that does not hold; an upstream skipped)
           any non-terminal ──▶ cancelled (the run ended: failed elsewhere, or cancelled)

The machine moves a node or a run only along these edges (`move_node`, `move_run`); any other
move is a bug and raises `IllegalTransition`. Terminal statuses have no way out within a run's
life; a manual retry of a failed or cancelled run reopens it (`REOPENED_BY_RETRY`), which is a
deliberate act from outside, not a rule of the machine.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from orchestrator.errors import IllegalTransition


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeStatus(enum.StrEnum):
    WAITING = "waiting"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
NODE_TERMINAL = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
)
# An attempt is out there: a worker (or a child run, a sleep, a wait) may report on it.
IN_FLIGHT = frozenset({NodeStatus.DISPATCHED, NodeStatus.RUNNING})

RUN_EDGES: Mapping[RunStatus, frozenset[RunStatus]] = {
    RunStatus.RUNNING: RUN_TERMINAL,
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

_W, _D, _R, _RT = NodeStatus.WAITING, NodeStatus.DISPATCHED, NodeStatus.RUNNING, NodeStatus.RETRYING
_S, _F, _SK, _C = NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED

NODE_EDGES: Mapping[NodeStatus, frozenset[NodeStatus]] = {
    _W: frozenset({_D, _R, _S, _F, _SK, _C}),
    _D: frozenset({_R, _S, _F, _RT, _C}),
    _R: frozenset({_S, _F, _RT, _C}),
    _RT: frozenset({_D, _C}),
    _S: frozenset(),
    _F: frozenset(),
    _SK: frozenset(),
    _C: frozenset(),
}

# What a manual retry of a run reopens: the run, and the nodes that did not succeed (a plain
# node waits again, a mapped child is dispatched again, a mapped parent runs again).
REOPENED_BY_RETRY: Mapping[RunStatus | NodeStatus, frozenset[RunStatus | NodeStatus]] = {
    RunStatus.FAILED: frozenset({RunStatus.RUNNING}),
    RunStatus.CANCELLED: frozenset({RunStatus.RUNNING}),
    NodeStatus.FAILED: frozenset({_W, _D, _R}),
    NodeStatus.CANCELLED: frozenset({_W, _D, _R}),
}


def check_node_move(current: NodeStatus, new: NodeStatus, *, retry: bool = False) -> None:
    if new == current or new in NODE_EDGES[current]:
        return
    if retry and new in REOPENED_BY_RETRY.get(current, frozenset()):
        return
    raise IllegalTransition(f"node status {current} -> {new} is not in the status graph")


def check_run_move(current: RunStatus, new: RunStatus, *, retry: bool = False) -> None:
    if new == current or new in RUN_EDGES[current]:
        return
    if retry and new in REOPENED_BY_RETRY.get(current, frozenset()):
        return
    raise IllegalTransition(f"run status {current} -> {new} is not in the status graph")
