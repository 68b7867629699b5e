"""Flow control as written in a spec, checked and compiled (docs/flow-control.md).

The spec models (`core/spec.py`) take limits as written — a bare number, `"10/s"`, a key
expression — and the compiler's `_check_*` steps ask this module what is wrong with them (each
problem naming its field) and for the compiled form the machine and the router use:

    RunFlow     a workflow's run concurrency limit, default priority, debounce or batching
    NodeLimit   one gate of a task node: a concurrency limit or a rate limit, with its key

Keys are expressions: over the run's input for a workflow (`$.input.customer`), over the task's
own input — its arguments — for a task (`$.input.account`), over the event for debounce and
batching (`$.subject`, `$.data.customer`). `key_value` evaluates one into the string that names
the limit's key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.core.expressions import ExpressionError, Ref, parse_ref, walk
from orchestrator.core.spec import NodeSpec, RateLimit, WorkflowSpec

DEFAULT_PRIORITY = 5
MAX_CONCURRENCY = 100_000
MAX_RATE = 10_000  # a rate limit keeps one entry per grant in its window (a sliding log)
MAX_PERIOD_S = 7 * 24 * 3600.0
MAX_BATCH = 1_000
# The attributes of an event as the router hands it on (`triggers.router.event_as_json`).
EVENT_FIELDS = ("id", "source", "type", "subject", "time", "datacontenttype", "extensions", "data")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class NodeLimit:
    """One gate a task node passes before it is dispatched."""

    scope: Literal["task", "rate"]
    limit: int
    key: Ref | None  # over the task's input; None: one limit for the task
    per_s: float | None = None  # rate limits: the window


@dataclass(frozen=True, slots=True)
class Collecting:
    """Debounce (`period_s`) or batching (`max_size`, `max_wait_s`) of an event trigger."""

    mode: Literal["debounce", "batch"]
    key: Ref | None  # over the event
    period_s: float = 0.0
    max_size: int = 0
    max_wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RunFlow:
    limit: int | None = None  # run concurrency; None: unlimited
    key: Ref | None = None
    on_limit: str = "queue"
    priority: int = DEFAULT_PRIORITY
    collecting: Collecting | None = None


Problems = list[str]


# ---- a workflow ------------------------------------------------------------------------------


def run_flow(spec: WorkflowSpec) -> tuple[RunFlow, Problems]:
    problems: Problems = []
    flow = RunFlow()
    properties = _input_properties(spec.input_schema)
    if spec.concurrency is not None:
        limit = _count(spec.concurrency.limit, "concurrency.limit", MAX_CONCURRENCY, problems)
        key = _key(spec.concurrency.key, "concurrency.key", properties, "the run's input", problems)
        flow = dataclasses.replace(flow, limit=limit, key=key, on_limit=spec.concurrency.on_limit)
    if spec.priority is not None:
        flow = dataclasses.replace(flow, priority=priority_problem(spec.priority, problems))
    if spec.debounce is not None and spec.batch is not None:
        problems.append("give one of debounce or batch, not both")
    elif spec.debounce is not None or spec.batch is not None:
        if not spec.on:
            which = "debounce" if spec.debounce is not None else "batch"
            problems.append(f"{which} applies to event triggers: the workflow has no `on`")
        flow = dataclasses.replace(flow, collecting=_collecting(spec, problems))
        _collected_input(spec, "debounce" if spec.debounce is not None else "batch", problems)
    return flow, problems


# What a debounced or a batched run gets as input (core.collect).
COLLECTED_INPUT = {"debounce": ("event", "count"), "batch": ("events", "count")}


def _collected_input(spec: WorkflowSpec, mode: str, problems: Problems) -> None:
    """A collected run's input must fit the workflow's schema: refused at registration, not as
    every run the collector starts. (A schema that allows other keys takes anything.)"""
    schema = spec.input_schema
    if not schema or schema.get("additionalProperties", True) is not False:
        return
    names = _input_properties(schema) or set()
    missing = [name for name in COLLECTED_INPUT[mode] if name not in names]
    if missing:
        wanted = ", ".join(COLLECTED_INPUT[mode])
        problems.append(
            f"{mode}: its runs get {{{wanted}}} as input, but the input schema has no "
            f"{' or '.join(repr(name) for name in missing)} and takes no other keys (in Python: "
            f"def {spec.name}({', '.join(_PARAMETERS[name] for name in COLLECTED_INPUT[mode])}))"
        )


_PARAMETERS = {"event": "event: dict", "events": "events: list[dict]", "count": "count: int"}


def priority_problem(value: Any, problems: Problems, field: str = "priority") -> int:
    """`value` as a priority (1-10), or the default after adding what is wrong to `problems`."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10:
        return value
    problems.append(f"{field} must be a whole number from 1 to 10 (higher first), got {value!r}")
    return DEFAULT_PRIORITY


def _collecting(spec: WorkflowSpec, problems: Problems) -> Collecting:
    if spec.debounce is not None:
        d = spec.debounce
        key = _event_key(d.key, "debounce.key", problems)
        return Collecting("debounce", key, period_s=_seconds(d.period, "debounce.period", problems))
    assert spec.batch is not None
    b = spec.batch
    return Collecting(
        "batch",
        _event_key(b.key, "batch.key", problems),
        max_size=_count(b.max_size, "batch.max_size", MAX_BATCH, problems) or 1,
        max_wait_s=_seconds(b.max_wait, "batch.max_wait", problems),
    )


# ---- a node ----------------------------------------------------------------------------------


def node_limits(node: NodeSpec) -> tuple[tuple[NodeLimit, ...], int | None, Problems]:
    """A node's gates (concurrency first, then rate: a token is taken only when the task can
    run at once), its map's `max_parallel`, and what is wrong with them."""
    problems: Problems = []
    gates: list[NodeLimit] = []
    arguments = set(node.inputs) | ({node.map.param} if node.map is not None else set())
    where = "the task's input"
    if (node.concurrency is not None or node.rate_limit is not None) and node.task is None:
        problems.append(
            "concurrency and rate_limit apply to task nodes (a child workflow has a "
            "`concurrency` of its own)"
        )
    if node.concurrency is not None:
        limit = _count(node.concurrency.limit, "concurrency.limit", MAX_CONCURRENCY, problems)
        key = _key(node.concurrency.key, "concurrency.key", arguments, where, problems)
        if limit is not None:
            gates.append(NodeLimit("task", limit, key))
    if node.rate_limit is not None:
        limit, per_s = _rate(node.rate_limit, problems)
        key = _key(node.rate_limit.key, "rate_limit.key", arguments, where, problems)
        if limit is not None and per_s is not None:
            gates.append(NodeLimit("rate", limit, key, per_s))
    max_parallel = None
    if node.map is not None and node.map.max_parallel is not None:
        max_parallel = _count(node.map.max_parallel, "map.max_parallel", MAX_CONCURRENCY, problems)
    return tuple(gates), max_parallel, problems


def _rate(rate: RateLimit, problems: Problems) -> tuple[int | None, float | None]:
    limit: Any = rate.limit
    per: Any = rate.per
    if isinstance(limit, str):
        count, _, period = limit.partition("/")
        if not period or not count.strip().isdigit():
            problems.append(
                f"rate_limit {limit!r} cannot be read: write '<count>/<period>', e.g. '10/s', "
                "'100/1m', '5/500ms'"
            )
            return None, None
        if rate.per != 1.0:
            problems.append(f"rate_limit {limit!r} gives its period already: drop `per`")
        text = limit
        limit, per = int(count), period.strip()
        return (
            _count(limit, f"rate_limit {text!r}: its count", MAX_RATE, problems),
            _duration(per, f"rate_limit {text!r}: its period", problems),
        )
    return (
        _count(limit, "rate_limit.limit", MAX_RATE, problems),
        _duration(per, "rate_limit.per", problems),
    )


# ---- the pieces ------------------------------------------------------------------------------


def _count(value: Any, field: str, most: int, problems: Problems) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most:
        return value
    problems.append(f"{field} must be a whole number from 1 to {most:,}, got {value!r}")
    return None


def _seconds(value: Any, field: str, problems: Problems) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and math.isfinite(value) and 0 < value <= MAX_PERIOD_S:
        return float(value)
    problems.append(f"{field} must be a number of seconds > 0 (at most 7 days), got {value!r}")
    return 1.0


def _duration(value: Any, field: str, problems: Problems) -> float | None:
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            problems.append(
                f"{field} {value!r} cannot be read: a number of seconds, or a count and a unit "
                "(ms, s, m, h, d), e.g. '1m'"
            )
            return None
        value = float(match.group(1) or 1) * _UNITS[match.group(2)]
    seconds = _seconds(value, field, problems)
    return seconds if seconds == value else None


def _key(
    text: str | None, field: str, names: Collection[str] | None, over: str, problems: Problems
) -> Ref | None:
    """A key over `$.input` whose first step, when `names` is known, is one of them."""
    if text is None:
        return None
    try:
        ref = parse_ref(text)
    except ExpressionError as exc:
        problems.append(f"{field}: {exc}")
        return None
    if ref.root != "input":
        problems.append(f"{field} {text!r} must be an expression over {over}: $.input.<name>")
        return None
    if names is not None and ref.path and ref.path[0] not in names:
        known = ", ".join(sorted(names)) or "none"
        problems.append(
            f"{field} {text!r} refers to nothing: {over} has no {ref.path[0]!r} (it has: {known})"
        )
        return None
    return ref


def _event_key(text: str | None, field: str, problems: Problems) -> Ref | None:
    """A key over the event, written `$.subject`, `$.data.customer`: read as a path into it."""
    if text is None:
        return None
    if not text.startswith("$."):
        problems.append(f"{field} {text!r} must be an expression over the event, e.g. $.subject")
        return None
    ref = _key("$.input" + text[1:], field, EVENT_FIELDS, "the event", problems)
    return dataclasses.replace(ref, text=text) if ref is not None else None


def _input_properties(schema: Mapping[str, Any] | None) -> set[str] | None:
    """The run input's parameters when its schema names them (None: anything goes)."""
    if not schema or not isinstance(schema.get("properties"), Mapping):
        return None
    return set(schema["properties"])


# ---- evaluating a key -----------------------------------------------------------------------


def key_value(key: Ref | None, value: Any) -> str:
    """The key named by `key` in `value` (the run's input, a task's input, an event): text as
    is, anything else as JSON. No key: the empty string (one limit for all).
    Raises ExpressionError when the path does not exist."""
    if key is None:
        return ""
    found = walk(value, key.path, key.text)
    if isinstance(found, str):
        return found
    return json.dumps(found, sort_keys=True, separators=(",", ":"), default=str)


__all__ = [
    "DEFAULT_PRIORITY",
    "Collecting",
    "NodeLimit",
    "RunFlow",
    "key_value",
    "node_limits",
    "priority_problem",
    "run_flow",
]
