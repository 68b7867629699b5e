"""Record the event histories that `tests/unit/test_replay.py` replays.

    .venv/bin/python -m tests.unit.histories.record      # rewrites tests/unit/histories/*.json

Each history is a spec, the events one run received in the order the orchestrator applied
them (duplicates and stale results included, as the bus really delivers them), what each event
did (applied or not, the commands it produced) and the run's final state. The files are
checked in: a change in the machine that alters any of it fails the replay, and re-recording
is a deliberate act whose diff a reviewer reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from events.models import (
    DATA_MODELS,
    RUN_REQUESTED,
    ErrorInfo,
    RunCancelRequested,
    RunRequested,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TimerFired,
    WireModel,
)
from orchestrator.core.commands import StartTimer
from orchestrator.core.compiler import compile_spec
from orchestrator.core.machine import advance, start_run
from orchestrator.core.state import RunState
from tests.unit.machine_support import describe, summary

HERE = Path(__file__).parent
EVENT_TYPES = {model: event_type for event_type, model in DATA_MODELS.items()}
T0 = 1_700_000_000.0


class Recorder:
    def __init__(self, name: str, description: str, spec: dict[str, Any], run_id: str) -> None:
        self.name = name
        self.description = description
        self.spec_data = spec
        self.spec = compile_spec(spec)
        self.run_id = run_id
        self.run: RunState | None = None
        self.events: list[dict[str, Any]] = []
        self.timers: list[StartTimer] = []

    def request(self, run_input: dict[str, Any], at: float) -> None:
        data = RunRequested(workflow=self.spec.name, input=run_input, run_id=self.run_id)
        out = start_run(self.spec, self.run_id, data, T0 + at)
        self.run = out.run
        self._record(data, at, out.applied, out.commands)

    def send(self, data: WireModel, at: float) -> None:
        assert self.run is not None
        out = advance(self.spec, self.run, data, T0 + at)  # type: ignore[arg-type]
        self._record(data, at, out.applied, out.commands)

    def started(self, node: str, attempt: int, at: float, worker: str = "w-1") -> None:
        self.send(TaskStarted(run_id=self.run_id, node_id=node, attempt=attempt, worker=worker), at)

    def completed(self, node: str, attempt: int, output: Any, at: float) -> None:
        self.send(
            TaskCompleted(
                run_id=self.run_id, node_id=node, attempt=attempt, worker="w-1", output=output
            ),
            at,
        )

    def failed(self, node: str, attempt: int, error: ErrorInfo, at: float) -> None:
        self.send(
            TaskFailed(
                run_id=self.run_id, node_id=node, attempt=attempt, worker="w-1", error=error
            ),
            at,
        )

    def fire(self, kind: str, node: str, attempt: int) -> None:
        """Deliver the timer the machine asked for, at the time it asked for."""
        [timer] = [
            t for t in self.timers if (t.kind, t.node_key, t.attempt) == (kind, node, attempt)
        ]
        event = TimerFired(
            run_id=self.run_id,
            timer_id=timer.timer_id,
            kind=timer.kind,  # type: ignore[arg-type]
            node_id=node,
            attempt=attempt,
        )
        self.send(event, timer.due_at - T0)

    def _record(self, data: WireModel, at: float, applied: bool, commands: list[Any]) -> None:
        self.timers += [c for c in commands if isinstance(c, StartTimer)]
        self.events.append(
            {
                "type": EVENT_TYPES[type(data)],
                "at": T0 + at,
                "data": data.model_dump(mode="json"),
                "expect": {"applied": applied, "commands": [describe(c) for c in commands]},
            }
        )

    def save(self) -> Path:
        assert self.run is not None
        assert self.events[0]["type"] == RUN_REQUESTED
        history = {
            "description": self.description,
            "run_id": self.run_id,
            "spec": self.spec_data,
            "events": self.events,
            "final": summary(self.run),
        }
        path = HERE / f"{self.name}.json"
        path.write_text(json.dumps(history, indent=2, sort_keys=False) + "\n")
        return path


def etl_fanout_retry() -> Recorder:
    rec = Recorder(
        "etl_fanout_retry",
        "extract fails once and is retried; transform fans out over its rows, one child "
        "fails once; load fans in; report is skipped by its condition. Includes a stale late "
        "result of extract's first attempt and a duplicate completion.",
        {
            "name": "etl",
            "version": 3,
            "nodes": [
                {
                    "id": "extract",
                    "task": "extract",
                    "inputs": {"source": "$.input.source"},
                    "retry": {"max_attempts": 3, "backoff_s": 2.0, "jitter": 0.2},
                },
                {
                    "id": "transform",
                    "task": "transform",
                    "inputs": {"factor": "$.input.factor"},
                    "map": {"over": "$.nodes.extract.rows", "param": "row"},
                    "retry": {"max_attempts": 2, "backoff_s": 1.0},
                },
                {"id": "load", "task": "load", "inputs": {"rows": "$.nodes.transform"}},
                {
                    "id": "report",
                    "task": "report",
                    "depends_on": ["load"],
                    "when": {"value": "$.input.notify", "op": "truthy"},
                },
            ],
            "output": {"loaded": "$.nodes.load", "report": "$.nodes.report"},
        },
        "run-etl-1",
    )
    flaky = ErrorInfo(type="ConnectionError", message="db reset", retryable=True)
    rec.request({"source": "s3://bucket/day", "factor": 10, "notify": False}, 0.0)
    rec.started("extract", 1, 0.1)
    rec.failed("extract", 1, flaky, 0.5)
    rec.fire("retry", "extract", 1)
    rec.started("extract", 2, 2.6)
    rec.completed("extract", 2, {"rows": [1, 2, 3]}, 3.0)
    rec.started("transform[1]", 1, 3.1)
    rec.completed("transform[0]", 1, 10, 3.2)
    rec.failed("transform[1]", 1, flaky, 3.3)
    rec.completed("extract", 1, {"rows": ["stale"]}, 3.4)  # the first attempt, late: stale
    rec.completed("transform[2]", 1, 30, 3.5)
    rec.fire("retry", "transform[1]", 1)
    rec.completed("transform[1]", 2, 20, 4.8)
    rec.completed("transform[0]", 1, 10, 4.9)  # redelivered: duplicate
    rec.started("load", 1, 5.0)
    rec.completed("load", 1, {"count": 3}, 5.5)
    rec.completed("load", 1, {"count": 3}, 6.0)  # after the run ended
    return rec


def timeout_exhausted() -> Recorder:
    rec = Recorder(
        "timeout_exhausted",
        "train times out twice (the orchestrator's deadline fires) and exhausts its attempts; "
        "the run fails and cancels prep, still running; the late results are ignored.",
        {
            "name": "ml",
            "nodes": [
                {"id": "prep", "task": "prep", "queue": "cpu", "timeout_s": 600},
                {
                    "id": "train",
                    "task": "train",
                    "queue": "gpu",
                    "inputs": {"lr": "$.input.lr"},
                    "timeout_s": 60,
                    "retry": {"max_attempts": 2, "backoff_s": 5.0, "jitter": 0.0},
                },
                {"id": "publish", "task": "publish", "inputs": {"model": "$.nodes.train"}},
            ],
            "output": "$.nodes.publish",
        },
        "run-ml-1",
    )
    rec.request({"lr": 0.01}, 0.0)
    rec.started("prep", 1, 0.2, worker="cpu-1")
    rec.started("train", 1, 0.3, worker="gpu-1")
    rec.fire("deadline", "train", 1)
    rec.fire("retry", "train", 1)
    rec.started("train", 2, 66.5, worker="gpu-2")
    rec.completed("train", 1, {"loss": 0.1}, 70.0)  # the timed-out attempt finishing: stale
    rec.fire("deadline", "train", 2)
    rec.completed("prep", 1, "prepped", 130.0)  # the run already failed
    rec.completed("train", 2, {"loss": 0.2}, 131.0)
    return rec


def cancelled_midway() -> Recorder:
    rec = Recorder(
        "cancelled_midway",
        "fetch succeeds; score runs under a deadline, audit waits on a retry timer and alert "
        "waits on score's result for its condition; the run is cancelled, and the results, "
        "timers and the second cancellation that arrive afterwards change nothing.",
        {
            "name": "review",
            "nodes": [
                {"id": "fetch", "task": "fetch", "inputs": {"id": "$.input.id"}},
                {
                    "id": "score",
                    "task": "score",
                    "inputs": {"doc": "$.nodes.fetch"},
                    "timeout_s": 30,
                },
                {
                    "id": "audit",
                    "task": "audit",
                    "inputs": {"doc": "$.nodes.fetch.body"},
                    "retry": {"max_attempts": 4, "backoff_s": 10.0},
                },
                {
                    "id": "alert",
                    "task": "alert",
                    "when": {"value": "$.nodes.score", "op": "gt", "operand": 0.9},
                },
            ],
            "output": {"score": "$.nodes.score", "audit": "$.nodes.audit"},
        },
        "run-review-1",
    )
    rec.request({"id": 42}, 0.0)
    rec.completed("fetch", 1, {"body": "text", "id": 42}, 1.0)
    rec.started("score", 1, 1.1)
    rec.started("audit", 1, 1.2)
    rec.failed("audit", 1, ErrorInfo(type="RateLimited", message="429", retryable=True), 1.5)
    rec.send(RunCancelRequested(run_id="run-review-1", reason="operator abort"), 2.0)
    rec.completed("score", 1, 0.95, 2.5)
    rec.fire("retry", "audit", 1)
    rec.send(RunCancelRequested(run_id="run-review-1", reason="again"), 3.0)
    return rec


def main() -> None:
    for make in (etl_fanout_retry, timeout_exhausted, cancelled_midway):
        print(make().save())


if __name__ == "__main__":
    main()
