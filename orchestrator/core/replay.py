"""A run's recorded events folded through the machine again (pure): what `conveyor replay`
prints and what the captured-history tests check.

The event stream is the source of truth from which the orchestrator's state can be rebuilt
(DESIGN §3). Replaying it answers "how did this run get here?" one transition at a time —
each event, whether it moved the run, the commands it produced — and whether the state it
arrives at is the one the orchestrator stored. Events are applied as the orchestrator applies
them: the machine's inputs only, each event (source and id) once. The clock of each transition
is the event's own `time`; the orchestrator used its clock when it applied the event, so
timestamps may differ by the delivery delay, which is why states are compared without them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from events.envelope import CloudEvent
from events.errors import ConveyorError, MalformedEvent
from events.models import DATA_MODELS, RUN_REQUESTED, RunRequested
from events.topology import ORCHESTRATOR_INPUTS
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
from orchestrator.core.compiler import CompiledSpec
from orchestrator.core.machine import advance, start_run
from orchestrator.core.state import RunState
from orchestrator.core.status import run_status

# Keys of `run_status` that hold clock readings: not compared between a replay and the store.
_TIMES = frozenset(
    {
        "created_at",
        "updated_at",
        "finished_at",
        "dispatched_at",
        "started_at",
        "at",
        "resumed_at",
        "duration_s",
    }
)
# Envelope metadata the shell records on a run (its trace, its trigger): not the machine's.
_SHELL = frozenset({"traceparent", "trigger"})


@dataclass(frozen=True, slots=True)
class Replayed:
    """One event of the run, and what applying it did."""

    event_id: str
    type: str
    time: str | None
    applied: bool
    commands: tuple[str, ...]
    status: str | None  # the run's status after it
    note: str = ""  # why it was skipped, when it was


@dataclass(slots=True)
class Replay:
    run: RunState | None = None
    steps: list[Replayed] = field(default_factory=list)


def epoch(time: str | None, default: float) -> float:
    if not time:
        return default
    try:
        return dt.datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def fold(
    spec: CompiledSpec, run_id: str, events: Iterable[CloudEvent], *, dedupe: bool = True
) -> Replay:
    """Apply the run's events in order; events the orchestrator does not consume (its own
    outputs) and repeats of an event (same source and id) are listed as skipped. `dedupe=False`
    hands repeats to the machine too (which must then change nothing: invariant 2 without the
    id check)."""
    out = Replay()
    seen: set[str] = set()
    last = 0.0
    for event in events:
        now = last = epoch(event.time, last)
        if event.type not in ORCHESTRATOR_INPUTS:
            out.steps.append(_skipped(event, out.run, "an output, not an input of the machine"))
            continue
        if dedupe and event.key in seen:
            out.steps.append(_skipped(event, out.run, "a repeat of an applied event"))
            continue
        seen.add(event.key)
        try:
            data = event.data_as(DATA_MODELS[event.type])
        except MalformedEvent as exc:
            out.steps.append(_skipped(event, out.run, f"malformed: {exc.reason}"))
            continue
        if event.type == RUN_REQUESTED:
            assert isinstance(data, RunRequested)
            if out.run is not None:
                out.steps.append(_skipped(event, out.run, "the run exists already"))
                continue
            transition = start_run(spec, run_id, data, now)
            out.run = transition.run
        elif out.run is None:
            out.steps.append(_skipped(event, None, "before the run was requested"))
            continue
        else:
            try:
                transition = advance(spec, out.run, data, now)  # type: ignore[arg-type]
            except ConveyorError as exc:
                out.steps.append(_skipped(event, out.run, f"rejected: {exc}"))
                continue
        out.steps.append(
            Replayed(
                event.id,
                event.type,
                event.time,
                transition.applied,
                tuple(describe(c) for c in transition.commands),
                out.run.status if out.run else None,
            )
        )
    return out


def _skipped(event: CloudEvent, run: RunState | None, note: str) -> Replayed:
    return Replayed(event.id, event.type, event.time, False, (), run.status if run else None, note)


def describe(command: Command) -> str:
    """A command in one short line (`dispatch train[2]#1`, `timer retry flaky#2 +1.9s`)."""
    if isinstance(command, Dispatch):
        return f"dispatch {command.node_key}#{command.attempt} ({command.task} on {command.queue})"
    if isinstance(command, StartTimer):
        return f"timer {command.kind} {command.node_key}#{command.attempt}"
    if isinstance(command, CancelTimer):
        return f"cancel timer {command.timer_id}"
    if isinstance(command, StartWait):
        return f"wait {command.node_key}#{command.attempt} for {command.type}"
    if isinstance(command, CancelWait):
        return f"stop waiting {command.node_key}"
    if isinstance(command, StartChild):
        return f"start child run {command.child_run_id} ({command.workflow})"
    assert isinstance(command, Emit)
    return f"emit {command.event_type.removeprefix('io.conveyor.')} ({command.key})"


def comparable(status: Mapping[str, Any]) -> Any:
    """A `run_status` view without its clock readings (and without the trace and the trigger,
    which the shell adds): what a replay must reproduce exactly."""

    def strip(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: strip(v) for k, v in value.items() if k not in _TIMES and k not in _SHELL}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(status)


def differences(replayed: RunState, stored: Mapping[str, Any]) -> list[str]:
    """Where the replayed state differs from the stored one (empty: they agree)."""
    mine, theirs = comparable(run_status(replayed)), comparable(stored)
    found: list[str] = []
    _diff(mine, theirs, "run", found)
    return found


def _diff(mine: Any, theirs: Any, where: str, found: list[str]) -> None:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs), key=str):
            if key not in mine or key not in theirs:
                found.append(f"{where}.{key}: only in the {'store' if key in theirs else 'replay'}")
            else:
                _diff(mine[key], theirs[key], f"{where}.{key}", found)
    elif mine != theirs:
        found.append(f"{where}: replayed {mine!r}, stored {theirs!r}")
