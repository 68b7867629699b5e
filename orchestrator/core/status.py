"""A run as the API and the CLI show it: a JSON-ready summary of its state (pure)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from orchestrator.core.rules import iso_utc
from orchestrator.core.state import Gate, NodeState, RunState
from orchestrator.core.statuses import NodeStatus, RunStatus

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
        _flow_of_node(node, entry)
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
        "priority": run.priority,
        "waiting": waiting(run.gate) if run.status == RunStatus.QUEUED and run.gate else None,
        "nodes": parents,
    }


def waiting(gate: Gate) -> dict[str, Any]:
    """Why a run or a node waits: the limit it is queued behind (docs/flow-control.md). Where
    the limiter lives in the same store, the read side adds its `position` in the queue, how
    many hold the limit now, and for a rate limit when the next token frees (`until`)."""
    return {
        "reason": "rate" if gate.scope == "rate" else "concurrency",
        "scope": gate.scope,
        "limit": gate.limit,
        "per_s": gate.per_s,
        "key": gate.key,
        "since": gate.since,
        "limiter": gate.limiter,
        "request": gate.request,
    }


def waiting_text(wait: dict[str, Any]) -> str:
    """`waiting` in words: 'queued behind concurrency limit 2 (key acme): 3rd in line, 2
    holding' or 'rate-limited to 10 per 1s (key k): 1st in line, next token at 12:00:01Z'."""
    key = f" (key {wait['key']})" if wait.get("key") else ""
    if wait.get("reason") == "rate":
        text = f"rate-limited to {wait['limit']} per {wait.get('per_s'):g}s{key}"
    else:
        text = f"queued behind {wait.get('scope', '')} concurrency limit {wait['limit']}{key}"
    details = []
    if wait.get("position") is not None:
        details.append(f"#{wait['position']} in line")
    if wait.get("holding") is not None:
        details.append(f"{wait['holding']} holding")
    if wait.get("until") is not None:
        details.append(f"next token at {iso_utc(wait['until'])}")
    return text + (": " + ", ".join(details) if details else "")


def flow_text(entity: dict[str, Any]) -> str:
    """A limiter or a collector of `/api/flow` in words: 'task concurrency 1 of charge (key
    acct-1): 1 holding, 3 queued' or 'debounce of settle (key s1): 3 events held, starts a run at
    12:00:05Z'."""
    key = f" (key {entity['key']})" if entity.get("key") else ""
    due = entity.get("timer_due")
    if entity.get("kind") == "collector":
        held = f"{entity['count']} event{'' if entity['count'] == 1 else 's'} held"
        when = f", starts a run at {iso_utc(due)}" if due is not None else ""
        return f"{entity['mode']} of {entity['workflow']}{key}: {held}{when}"
    if entity.get("scope") == "rate":
        limit = f"rate {entity['limit']} per {entity.get('per_s'):g}s"
        counts = f"{entity['holding']} in the window, {entity['waiting']} queued"
        if due is not None:
            counts += f", next token at {iso_utc(due)}"
    else:
        limit = f"{entity.get('scope')} concurrency {entity['limit']}"
        counts = f"{entity['holding']} holding, {entity['waiting']} queued"
    return f"{limit} of {entity['name']}{key}: {counts}"


def _flow_of_node(node: NodeState, entry: dict[str, Any]) -> None:
    if node.status == NodeStatus.QUEUED and node.gates:
        entry["waiting"] = waiting(node.gates[-1])
    if node.children is not None and node.next_child < node.children:
        # A map bounded by max_parallel: the children not started yet wait for a place.
        entry["children_not_started"] = node.children - node.next_child


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
