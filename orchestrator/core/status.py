"""A run as the API and the CLI show it: a JSON-ready summary of its state (pure)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from orchestrator.core.state import RunState

MAX_LISTED_FAILURES = 20
# A status answer travels in one NATS message (1 MiB at most): big values are summarised.
MAX_NODE_VALUE_BYTES = 64 * 1024
MAX_RUN_OUTPUT_BYTES = 512 * 1024


def bounded(value: Any, limit: int) -> Any:
    """`value`, or a summary of it when its JSON is over `limit` bytes."""
    if value is None or isinstance(value, bool | int | float):
        return value
    size = len(json.dumps(value, separators=(",", ":"), default=str))
    if size <= limit:
        return value
    summary: dict[str, Any] = {"truncated": True, "bytes": size, "type": type(value).__name__}
    if isinstance(value, list | dict):
        summary["length"] = len(value)
    return summary


def run_status(run: RunState, *, include_io: bool = True) -> dict[str, Any]:
    """`run_id, workflow, version, status, output, error, timings` and `nodes`: one entry per
    node of the spec (mapped nodes summarised with counts of their children by status).

    `duration_s` is the run's active time (up to its end, or while it runs up to its last
    update): a manual retry starts a new span at `resumed_at`. A node's `attempts` counts every
    attempt it had; `attempts_since_retry`, those since the last manual retry of the run — what
    its retry policy's `max_attempts` applies to."""
    parents: dict[str, dict[str, Any]] = {}
    child_counts: dict[str, Counter[str]] = {}
    child_attempts: Counter[str] = Counter()
    failures: dict[str, list[dict[str, Any]]] = {}
    for node in run.nodes.values():
        if node.index is not None:
            child_counts.setdefault(node.node_id, Counter())[node.status] += 1
            child_attempts[node.node_id] += len(node.attempts)
            if node.error and len(failures.setdefault(node.node_id, [])) < MAX_LISTED_FAILURES:
                failures[node.node_id].append({"key": node.key, "error": node.error})
            continue
        entry: dict[str, Any] = {
            "status": node.status,
            "attempts": len(node.attempts),
            # What the retry policy's max_attempts counts: a manual retry of the run starts over.
            "attempts_since_retry": node.attempts_since_retry,
            "attempt_history": [a.to_dict() for a in node.attempts],
            "error": node.error,
        }
        if include_io:
            entry["input"] = bounded(node.input, MAX_NODE_VALUE_BYTES)
            entry["output"] = bounded(node.output, MAX_NODE_VALUE_BYTES)
        if node.children is not None:
            entry["children"] = {"total": node.children}
            del entry["attempts_since_retry"]  # each child has a budget of its own
        parents[node.key] = entry
    for node_id, counts in child_counts.items():
        entry = parents[node_id]
        entry["children"] = {
            "total": entry.get("children", {}).get("total", sum(counts.values())),
            **dict(sorted(counts.items())),
        }
        entry["attempts"] = child_attempts[node_id]
        if failures.get(node_id):
            entry["failed_children"] = failures[node_id]
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "version": run.version,
        "status": run.status,
        "input": run.input if include_io else None,
        "output": bounded(run.output, MAX_RUN_OUTPUT_BYTES),
        "error": run.error,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
        "resumed_at": run.resumed_at,
        # Active time: the idle gap between an end and a manual retry is not counted.
        "duration_s": round(run.active_s(), 3),
        "idempotency_key": run.idempotency_key,
        "traceparent": run.traceparent,
        "trigger": run.trigger,
        "notifications": run.notifications,
        "nodes": parents,
    }


def no_worker_note(queue: str, task: str, seconds: float) -> dict[str, Any]:
    """What a node shows while it waits for a worker that no running worker could be."""
    waited = round(seconds)
    return {
        "queue": queue,
        "task": task,
        "seconds": waited,
        "message": f"no worker has served task {task!r} (queue {queue!r}) for {waited} s: "
        "start a worker that serves it",
    }
