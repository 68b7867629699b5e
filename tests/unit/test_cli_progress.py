"""What a person waiting on a run sees (`orchestrator/cli/progress.py`), rendered by rich on a
recording console of a given size, and as plain lines for logs, for runs of any size."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.console import Console

from orchestrator.cli.progress import (
    DETAILED_UP_TO,
    MAX_FAILURE_LINES,
    STEPS,
    LineLog,
    Progress,
    RunView,
    node_text,
    summary,
)

RUN_ID = "01a2327fe1c9a706b3a710046782"


def chain_status(total: int, done: int, *, failed: tuple[int, ...] = ()) -> dict[str, Any]:
    """A chain of `total` steps, the first `done` succeeded and the next one running."""
    nodes: dict[str, Any] = {}
    for i in range(total):
        status = "succeeded" if i < done else "running" if i == done else "waiting"
        if i in failed:
            status = "failed"
        nodes[f"step_{i}"] = {"status": status, "attempts": 1 if i <= done else 0}
    run_status = "succeeded" if done == total else "running"
    return {"run_id": RUN_ID, "workflow": "chain120", "status": run_status, "nodes": nodes}


def rendered(view: RunView, width: int, height: int) -> list[str]:
    console = Console(record=True, width=width, height=height, force_terminal=True)
    console.print(view)
    return console.export_text().splitlines()


@pytest.mark.parametrize(("width", "height"), [(80, 24), (50, 10), (120, 6), (36, 4), (60, 2)])
def test_a_big_run_fits_the_console_and_shows_its_progress_and_running_node(
    width: int, height: int
) -> None:
    view = RunView(RUN_ID, "chain120", clock=lambda: 12.5)
    view.started = 0.0
    view.update(chain_status(120, 41, failed=(7,)))

    lines = rendered(view, width, height)

    assert len(lines) <= height
    assert all(len(line) <= width for line in lines), lines
    assert lines[0].startswith("chain120 · running")  # the header never wraps
    assert lines[1].startswith("40/120 done · 1 running · 1 failed")
    if height > 2:
        assert any(line.startswith("now: step_41") or "now: step_41" in line for line in lines)
    if height >= 5:
        assert any("step_41" in line and "running" in line for line in lines[2:])
        assert any("step_7" in line and "failed" in line for line in lines[2:])
        assert re.search(r"… 118 more: 78 waiting, 40 succeeded", lines[-1])


def test_the_running_nodes_share_the_counts_line_when_it_is_wide_enough() -> None:
    view = RunView(RUN_ID, "chain120", clock=lambda: 12.5)
    view.started = 0.0
    view.update(chain_status(120, 41, failed=(7,)))
    lines = rendered(view, 100, 24)
    assert lines[1] == "40/120 done · 1 running · 1 failed · 12.5s · now: step_41"


def test_a_failed_big_run_shows_its_failure_before_what_was_cancelled() -> None:
    view = RunView(RUN_ID, "chain120", clock=lambda: 3.0)
    view.started = 0.0
    status = chain_status(120, 5)
    status["status"] = "failed"
    for i, key in enumerate(status["nodes"]):
        status["nodes"][key]["status"] = (
            "succeeded" if i < 5 else "failed" if i == 5 else "cancelled"
        )
    view.update(status)

    lines = rendered(view, 80, 8)

    assert lines[1] == "5/120 done · 0 running · 1 failed · 114 cancelled · 3.0s"
    assert lines[2].split() == ["step_5", "failed"]
    assert lines[-1].strip() == "… 115 more: 110 cancelled, 5 succeeded"


def test_a_small_run_shows_every_node() -> None:
    view = RunView(RUN_ID, "hello", clock=lambda: 1.0)
    view.started = 0.0
    status = chain_status(3, 1)
    status["nodes"]["step_1"] = {"status": "retrying", "attempts": 4, "attempts_since_retry": 2}
    view.max_attempts = {"step_1": 3}
    view.update(status)

    lines = rendered(view, 80, 24)

    assert lines[0] == f"hello · running · run {RUN_ID}"
    assert [line.split() for line in lines[2:]] == [
        ["step_0", "succeeded"],
        ["step_1", "retrying", "(attempt", "2", "of", "3)"],
        ["step_2", "waiting"],
    ]


def test_the_live_display_uses_the_consoles_size_at_each_refresh() -> None:
    """Through `Progress`, as `run --wait` drives it: rich's Live on a terminal console."""
    out = io.StringIO()
    console = Console(file=out, width=60, height=12, force_terminal=True)
    with Progress(RUN_ID, "chain120", console=console) as progress:
        assert progress.live_mode
        for done in (0, 30, 60, 119):
            progress.update(chain_status(120, done))
    screen = out.getvalue()
    assert "119/120 done · 1 running · 0 failed" in screen
    assert "now: step_119" in screen


def test_without_a_terminal_a_big_run_prints_a_bounded_number_of_lines() -> None:
    out = io.StringIO()
    log = LineLog(out, clock=lambda: 0.0)
    failures = tuple(range(0, 100, 3))  # 34 failed nodes
    for done in range(121):
        log.update(chain_status(120, done, failed=tuple(f for f in failures if f < done)))

    lines = out.getvalue().splitlines()
    assert len(lines) <= STEPS + 2 + MAX_FAILURE_LINES, lines
    assert not any("waiting" in line for line in lines if "done ·" not in line)
    assert "] 0/120 done" in lines[0]
    assert "86/120 done · 0 running · 34 failed" in lines[-1]


def test_without_a_terminal_a_small_run_prints_its_node_changes_but_not_the_waiting() -> None:
    out = io.StringIO()
    log = LineLog(out, clock=lambda: 0.0)
    for done in range(4):
        log.update(chain_status(3, done))
    text = out.getvalue()
    assert "waiting" not in text
    assert [line.split("] ", 1)[1] for line in text.splitlines()] == [
        "  step_0: running",
        "  step_0: succeeded",
        "  step_1: running",
        "  step_1: succeeded",
        "  step_2: running",
        "  step_2: succeeded",
    ]
    assert DETAILED_UP_TO >= 3


def test_a_mapped_node_is_reported_at_each_tenth_of_its_children_not_each_change() -> None:
    out = io.StringIO()
    log = LineLog(out, clock=lambda: 0.0)
    for done in range(1001):
        children = {"total": 1000, "succeeded": done}
        node = {"status": "running", "attempts": done, "children": children}
        log.update({"status": "running", "nodes": {"train": node}})
    assert len(out.getvalue().splitlines()) == STEPS + 1


def test_attempts_count_since_the_last_retry_against_the_policy() -> None:
    after_retry = {"status": "failed", "attempts": 6, "attempts_since_retry": 3}
    assert node_text(after_retry, 3) == "failed (attempt 3 of 3)"
    assert node_text({"status": "failed", "attempts": 1, "attempts_since_retry": 1}, 1) == (
        "failed (attempt 1 of 1)"
    )
    assert node_text({"status": "succeeded", "attempts": 1}) == "succeeded"
    status = {
        "run_id": RUN_ID,
        "status": "failed",
        "duration_s": 8.25,
        "resumed_at": 1000.0,
        "error": {"type": "ValueError", "message": "boom", "node_id": "flaky"},
        "nodes": {"flaky": after_retry},
    }
    assert summary(status, {"flaky": 3}).splitlines() == [
        f"run {RUN_ID} failed after 8.2s (active time: the wait before its retry is not counted)",
        "error at node 'flaky': ValueError: boom (attempt 3 of 3)",
    ]


def test_a_node_no_running_worker_serves_says_so_once_in_a_log_and_on_its_row() -> None:
    note = {
        "queue": "gpu",
        "task": "train",
        "seconds": 12,
        "message": "no worker has served task 'train' (queue 'gpu') for 12 s: start a worker "
        "that serves it",
    }
    status = chain_status(3, 1)
    status["nodes"]["step_1"] = {"status": "dispatched", "attempts": 1, "no_worker": note}
    out = io.StringIO()
    log = LineLog(out, clock=lambda: 0.0)
    log.update(status)
    log.update(status)
    assert out.getvalue().count("no worker has served task 'train' (queue 'gpu')") == 1

    view = RunView(RUN_ID, "chain3", clock=lambda: 1.0)
    view.started = 0.0
    view.update(status)
    [row] = [line for line in rendered(view, 120, 24) if line.startswith("  step_1 ")]
    assert "dispatched · no worker has served task 'train' (queue 'gpu') for 12 s" in row
