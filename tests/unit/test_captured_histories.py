"""Histories captured from live runs (`histories/capture.py`), replayed through the pure machine.

Each file holds every CloudEvent of one real run in stream order and the state the orchestrator
stored. Folding the events through the machine must arrive at exactly that state (clock
readings aside: the orchestrator used its clock, the replay uses each event's time), and a
second fold of the same events must change nothing (every event applied at most once).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from events.envelope import CloudEvent
from events.models import RUN_REQUESTED
from orchestrator.core.compiler import compile_spec
from orchestrator.core.replay import differences, fold

CAPTURED = sorted((Path(__file__).parent / "histories" / "captured").glob("*.json"))


def _events(history: dict[str, Any]) -> list[CloudEvent]:
    return [
        CloudEvent(
            id=e["id"],
            source=e["source"],
            type=e["type"],
            time=e["time"],
            subject=e["subject"],
            extensions=e["extensions"],
            data=base64.b64decode(e["data_base64"]),
        )
        for e in history["events"]
    ]


def test_there_are_live_histories_to_replay() -> None:
    assert {p.stem for p in CAPTURED} >= {
        "live_retry_then_succeed",
        "live_fan_out",
        "live_cancelled_midway",
    }


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.stem)
def test_replaying_a_live_history_gives_the_stored_state(path: Path) -> None:
    history = json.loads(path.read_text())
    spec = compile_spec(history["spec"])
    events = _events(history)
    assert events[0].type == RUN_REQUESTED
    replay = fold(spec, history["run_id"], events)
    assert replay.run is not None
    assert differences(replay.run, history["stored"]) == []
    assert replay.run.status == history["stored"]["status"]


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.stem)
@pytest.mark.parametrize("dedupe", [True, False], ids=["by-id", "machine-alone"])
def test_every_event_applies_once(path: Path, dedupe: bool) -> None:
    """The whole history delivered twice: the second pass changes nothing, whether the event
    ids are checked first (as the engine does) or the machine sees every repeat itself."""
    history = json.loads(path.read_text())
    spec = compile_spec(history["spec"])
    events = _events(history)
    replay = fold(spec, history["run_id"], events + events, dedupe=dedupe)
    second = replay.steps[len(events) :]
    assert [s for s in second if s.applied] == []
    assert replay.run is not None
    assert differences(replay.run, history["stored"]) == []
