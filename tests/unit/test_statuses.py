"""The status graph and the machine's transition tables, checked as structures.

The machine moves statuses only along `NODE_EDGES` / `RUN_EDGES` (it raises IllegalTransition
otherwise, and every machine test runs with that check on), and its tables must name a rule for
every (event kind, status) pair: a status added without rules is caught here, not in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import pytest

from orchestrator.core.machine import NODE_RULES, RUN_RULES, NodeEvent, RunLevel
from orchestrator.core.statuses import (
    IN_FLIGHT,
    NODE_EDGES,
    NODE_TERMINAL,
    REOPENED_BY_RETRY,
    RUN_EDGES,
    RUN_TERMINAL,
    NodeStatus,
    RunStatus,
    check_node_move,
    check_run_move,
)
from orchestrator.errors import IllegalTransition

S = TypeVar("S")


def _reachable(edges: Mapping[S, frozenset[S]], start: S) -> set[S]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("status", list(NodeStatus))
def test_every_node_status_reaches_a_terminal_one(status: NodeStatus) -> None:
    assert _reachable(NODE_EDGES, status) & NODE_TERMINAL


@pytest.mark.parametrize("status", list(RunStatus))
def test_every_run_status_reaches_a_terminal_one(status: RunStatus) -> None:
    assert _reachable(RUN_EDGES, status) & RUN_TERMINAL


def test_terminal_statuses_have_no_way_out() -> None:
    assert all(not NODE_EDGES[s] for s in NODE_TERMINAL)
    assert all(not RUN_EDGES[s] for s in RUN_TERMINAL)
    assert set(NODE_EDGES) == set(NodeStatus)
    assert set(RUN_EDGES) == set(RunStatus)


def test_non_terminal_statuses_are_all_reachable_from_the_start() -> None:
    assert _reachable(NODE_EDGES, NodeStatus.WAITING) == set(NodeStatus)
    assert _reachable(RUN_EDGES, RunStatus.RUNNING) == set(RunStatus)


def test_in_flight_statuses_can_be_cancelled_and_are_not_terminal() -> None:
    assert not IN_FLIGHT & NODE_TERMINAL
    assert all(NodeStatus.CANCELLED in NODE_EDGES[s] for s in IN_FLIGHT)


def test_only_a_manual_retry_reopens_a_failed_or_cancelled_run_or_node() -> None:
    assert set(REOPENED_BY_RETRY) == {
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        NodeStatus.FAILED,
        NodeStatus.CANCELLED,
    }
    with pytest.raises(IllegalTransition, match="failed -> running"):
        check_run_move(RunStatus.FAILED, RunStatus.RUNNING)
    check_run_move(RunStatus.FAILED, RunStatus.RUNNING, retry=True)
    with pytest.raises(IllegalTransition):
        check_run_move(RunStatus.SUCCEEDED, RunStatus.RUNNING, retry=True)
    with pytest.raises(IllegalTransition):
        check_node_move(NodeStatus.SUCCEEDED, NodeStatus.WAITING, retry=True)
    check_node_move(NodeStatus.FAILED, NodeStatus.WAITING, retry=True)


def test_a_move_outside_the_graph_is_refused() -> None:
    with pytest.raises(IllegalTransition, match="succeeded -> running"):
        check_node_move(NodeStatus.SUCCEEDED, NodeStatus.RUNNING)
    with pytest.raises(IllegalTransition, match="retrying -> running"):
        check_node_move(NodeStatus.RETRYING, NodeStatus.RUNNING)


def test_the_node_event_table_names_a_rule_for_every_pair() -> None:
    assert set(NODE_RULES) == set(NodeEvent)
    for kind, rules in NODE_RULES.items():
        assert set(rules) == set(NodeStatus), f"{kind}: {set(NodeStatus) - set(rules)}"


def test_the_run_event_table_names_a_rule_for_every_pair() -> None:
    assert set(RUN_RULES) == set(RunLevel)
    for kind, rules in RUN_RULES.items():
        assert set(rules) == set(RunStatus), f"{kind}: {set(RunStatus) - set(rules)}"


def test_node_events_act_only_on_statuses_that_can_move() -> None:
    """A rule other than `_stale` on a terminal status would move a finished node."""
    for kind, rules in NODE_RULES.items():
        for status in NODE_TERMINAL:
            assert rules[status].__name__ == "_stale", (kind, status)
