"""Recorded event histories, replayed through the pure machine (regression tests).

Each `histories/*.json` holds a spec, the events one run received in the order they were
applied, what each event did and the final state (see `histories/record.py`, which writes
them). A replay must reproduce all of it; replaying the whole history a second time must then
change nothing, as redelivering any event must not.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from events.models import DATA_MODELS, RUN_REQUESTED, RunRequested
from orchestrator.core.compiler import CompiledSpec, compile_spec
from orchestrator.core.machine import advance, start_run
from orchestrator.core.state import RunState
from orchestrator.core.statuses import RUN_TERMINAL
from tests.unit.machine_support import describe, summary

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "etl_fanout_retry",
        "timeout_exhausted",
        "cancelled_midway",
    }


def _replay(history: dict[str, Any]) -> tuple[CompiledSpec, RunState, list[Any]]:
    spec = compile_spec(history["spec"])
    first, *rest = history["events"]
    assert first["type"] == RUN_REQUESTED
    request = RunRequested.model_validate(first["data"])
    out = start_run(spec, history["run_id"], request, first["at"])
    run = out.run
    assert run is not None
    assert [describe(c) for c in out.commands] == first["expect"]["commands"]
    events = []
    for position, recorded in enumerate(rest, start=1):
        event = DATA_MODELS[recorded["type"]].model_validate(recorded["data"])
        events.append(event)
        out = advance(spec, run, event, recorded["at"])  # type: ignore[arg-type]
        where = f"event {position} ({recorded['type']})"
        assert out.applied == recorded["expect"]["applied"], where
        assert [describe(c) for c in out.commands] == recorded["expect"]["commands"], where
    return spec, run, events


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_replaying_a_history_reproduces_every_step_and_the_final_state(path: Path) -> None:
    history = json.loads(path.read_text())

    _, run, _ = _replay(history)

    assert summary(run) == history["final"]


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_redelivering_a_whole_history_after_it_ended_changes_nothing(path: Path) -> None:
    history = json.loads(path.read_text())
    spec, run, events = _replay(history)
    assert run.status in RUN_TERMINAL
    before = copy.deepcopy(run)

    for event in events:
        out = advance(spec, run, event, history["events"][-1]["at"] + 100)
        assert not out.applied and out.commands == [], event

    assert run == before
