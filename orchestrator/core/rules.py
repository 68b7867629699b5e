"""The machine's pure rules that need no run state: retry backoff and jitter, which runs can be
retried, conditions, input validation against the workflow's schema, instants, and the ids of
timers and child runs.

Each rule has this one home: the HTTP API, the CLI and the client ask these functions rather
than restating them (a restated copy drifts: the CLI once retried runs the machine refused).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import operator
from collections.abc import Callable, Mapping
from typing import Any

from events.ids import derived_id
from events.models import ErrorInfo
from orchestrator.core.compiler import CompiledSpec
from orchestrator.core.expressions import DictT, ExpressionError, ListT, Literal, Ref, Template
from orchestrator.core.spec import Condition, RetryPolicy
from orchestrator.core.state import NodeState
from orchestrator.core.statuses import RunStatus


def backoff_delay(
    policy: RetryPolicy, run_id: str, node_key: str, attempt: int, used: int | None = None
) -> float:
    """Delay before attempt `attempt + 1`: exponential in `used` (the attempts spent since the
    budget started: the first attempt, or a manual retry of the run — default `attempt`), with
    jitter derived from the ids, and never longer than `backoff_max_s` (the cap applies after the
    jitter: a user who sets a maximum expects no wait above it, not one up to `jitter` above
    it)."""
    exponent = (attempt if used is None else used) - 1
    base = min(policy.backoff_max_s, policy.backoff_s * policy.backoff_multiplier**exponent)
    digest = hashlib.blake2b(f"{run_id}/{node_key}/{attempt}".encode(), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / 2**64  # in [0, 1)
    return min(policy.backoff_max_s, max(0.0, base * (1 + policy.jitter * (2 * unit - 1))))


def skipped_as_none(template: Template, skipped: set[str]) -> Template:
    """`template` with every reference into a skipped node (`$.nodes.x`, `$.nodes.x.a.b`) made
    None. Only the run's output can name a skipped node (inputs and conditions name their
    dependencies, and a skipped dependency skips the node); without this, a path into an
    optional node that did not run failed the whole run after every task had succeeded."""
    if not skipped:
        return template
    if isinstance(template, Ref):
        return Literal(None) if template.node in skipped else template
    if isinstance(template, ListT):
        return ListT(tuple(skipped_as_none(t, skipped) for t in template.items))
    if isinstance(template, DictT):
        return DictT(tuple((k, skipped_as_none(t, skipped)) for k, t in template.items))
    return template


def retryable(error: ErrorInfo, policy: RetryPolicy) -> bool:
    return error.retryable and error.type not in policy.non_retryable


def applied_at(last_us: int, stored_us: int) -> int:
    """When an event is applied, in microseconds: the time every decision of the machine and
    the flow entities takes (a rate window, priority aging, a debounce or batch window, a
    backoff's due time). It is the event's time in the stream — the same for the owner, a
    successor replaying it and a projection — never earlier than the last event its partition
    applied (a stream's timestamps come from its leader's clock, which may step back when the
    leader changes). `stored_us` 0 (an event applied in the batch that emitted it, before it
    reached the stream) is applied at the last one's time. (docs/failover.md)"""
    return max(last_us, stored_us)


@functools.lru_cache(maxsize=64)  # an event's rows (and often its batch's) share its time
def iso_utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def child_run_id(run_id: str, node_key: str, attempt: int) -> str:
    """The run a sub-workflow node's attempt starts: the same every time it is computed."""
    return derived_id("child", run_id, node_key, str(attempt))


def instant_of(value: Any, node_key: str) -> float:
    """An RFC 3339 instant (or epoch seconds) as epoch seconds; ExpressionError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.timestamp()
    raise ExpressionError(
        f"sleep.until of node {node_key!r} must be an RFC 3339 instant with a time zone "
        f"(e.g. 2030-01-01T09:00:00Z), got {value!r}"
    )


def timer_id(run_id: str, node: NodeState, kind: str) -> str:
    return f"timer:{run_id}:{node.key}:{node.attempt}:{kind}"


def expression_error(exc: ExpressionError, node: str | None) -> ErrorInfo:
    return ErrorInfo(type="ExpressionError", message=str(exc), retryable=False, node_id=node)


def input_problems(spec: CompiledSpec, run_input: dict[str, Any]) -> list[str]:
    """What is wrong with a run's input, one line per problem (`input.items[0]: ...`), in the
    order of the input's paths. Fills the schema's defaults into `run_input` (the machine keeps
    the filled input as the run's; the client validates a copy)."""
    schema = spec.spec.input_schema
    if schema is None or spec.input_validator is None:
        return []
    properties = schema.get("properties") or {}
    for name, prop in properties.items():
        if isinstance(prop, dict) and "default" in prop and name not in run_input:
            run_input[name] = prop["default"]
    problems = []
    for err in sorted(spec.input_validator.iter_errors(run_input), key=lambda e: list(e.path)):
        where = "input" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err.path)
        if err.validator == "additionalProperties" and not err.path:
            for key in sorted(set(run_input) - set(properties)):
                takes = ", ".join(properties) or "no parameters"
                problems.append(
                    f"input.{key}: workflow {spec.name!r} has no parameter {key!r} "
                    f"(it takes: {takes})"
                )
            continue
        problems.append(f"{where}: {err.message}")
    return problems


def retry_refusal(status: str, error: Mapping[str, Any] | None) -> str | None:
    """Why a run in `status` (ended with `error`) cannot be retried, or None when it can."""
    if status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        state = "succeeded" if status == RunStatus.SUCCEEDED else f"is {status}"
        return f"it {state}; only a failed or cancelled run can be retried"
    if error and error.get("type") == "InvalidInput":
        return "it failed on its input, which a retry would not change; trigger a new run"
    return None


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
}


def holds(condition: Condition, value: Any) -> bool:
    if condition.op == "truthy":
        return bool(value)
    if condition.op == "falsy":
        return not value
    try:
        return bool(_OPERATORS[condition.op](value, condition.operand))
    except TypeError as exc:
        raise ExpressionError(
            f"condition {condition.op} cannot compare {value!r} with {condition.operand!r}: {exc}"
        ) from None
