"""Workflows are data: `WorkflowSpec` and its parts, as `@workflow` produces them, a YAML/JSON
file holds them and the KV bucket stores them. `core/compiler.py` validates a spec fully and
compiles it for the machine.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WORKFLOW_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}\Z")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """How failed attempts are retried: exponential backoff with deterministic jitter."""

    max_attempts: int = Field(1, ge=1, le=1000)
    backoff_s: float = Field(1.0, ge=0)
    backoff_multiplier: float = Field(2.0, ge=1)
    backoff_max_s: float = Field(300.0, ge=0)
    jitter: float = Field(0.1, ge=0, le=1)
    # Error types (the failing exception's class name) that are never retried.
    non_retryable: tuple[str, ...] = ()


Operator = Literal["truthy", "falsy", "eq", "ne", "gt", "ge", "lt", "le", "in", "not_in"]


class Condition(_Strict):
    """Run the node only when `value <op> operand` holds; otherwise it is skipped."""

    value: Any
    op: Operator = "truthy"
    operand: Any = None


class MapSpec(_Strict):
    """Fan out: one child attempt per element of `over`, bound to the task parameter `param`."""

    over: Any
    param: str = Field(min_length=1)


class SleepSpec(_Strict):
    """A durable sleep: `seconds` after the node becomes ready, or `until` an instant (RFC 3339,
    may be an expression). Survives orchestrator restarts (a durable timer)."""

    seconds: Any = None  # a number, or an expression giving one
    until: Any = None


class WaitSpec(_Strict):
    """Wait for a CloudEvent of `type` whose attributes equal `match` (values may be
    expressions, e.g. `{"subject": "$.input.order_id"}`), published on the ingest subjects.
    The node's output is the event. On timeout: fail, or succeed with `default`."""

    type: str = Field(min_length=1)
    match: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)
    on_timeout: Literal["fail", "default"] = "fail"
    default: Any = None


class ChildSpec(_Strict):
    """Run another workflow as this node: its input is the node's inputs, its output (or error)
    the node's. Cancelling the parent cancels the child."""

    name: str = Field(min_length=1)
    version: int | None = Field(None, ge=1)


class Schedule(_Strict):
    """Start a run on a cron schedule (5 fields, or 6 with seconds), in a time zone."""

    cron: str
    timezone: str = "UTC"
    input: dict[str, Any] = Field(default_factory=dict)
    # After downtime: fire nothing missed, only the latest missed instant, or all (bounded).
    catchup: Literal["none", "latest", "all"] = "latest"
    max_catchup: int = Field(100, ge=1, le=10_000)


class Notify(_Strict):
    """POST the run's outcome event (structured CloudEvent, Standard Webhooks signed when a
    `secret` is set: `env:NAME` reads it from the environment) to `url`, with retries."""

    url: str = Field(pattern=r"^https?://")
    on: tuple[Literal["succeeded", "failed", "cancelled"], ...] = (
        "succeeded",
        "failed",
        "cancelled",
    )
    secret: str | None = None
    max_attempts: int = Field(6, ge=1, le=50)
    timeout_s: float = Field(10.0, gt=0, le=300)


NODE_KINDS = ("task", "sleep", "wait_for", "workflow")


class NodeSpec(_Strict):
    id: str
    # Exactly one of: a task run by workers, a durable sleep, a wait for an event, a child run.
    task: str | None = Field(None, min_length=1)
    sleep: SleepSpec | None = None
    wait_for: WaitSpec | None = None
    workflow: ChildSpec | None = None
    queue: str = "default"
    inputs: dict[str, Any] = Field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    timeout_s: float | None = Field(None, gt=0)
    # How long an attempt may wait for a worker to start it (no worker serves the task, or all
    # are busy) before it fails with ScheduleToStartTimeout; the retry policy then applies.
    schedule_to_start_s: float | None = Field(None, gt=0)
    when: Condition | None = None
    map: MapSpec | None = None


class WorkflowSpec(_Strict):
    name: str
    version: int = Field(0, ge=0)
    description: str = ""
    input_schema: dict[str, Any] | None = None
    nodes: tuple[NodeSpec, ...] = Field(min_length=1)
    output: Any = None
    schedules: tuple[Schedule, ...] = ()
    # CloudEvents Subscriptions API filters: an event matching any of them starts a run.
    on: tuple[dict[str, Any], ...] = ()
    notify: tuple[Notify, ...] = ()

    @property
    def child_workflows(self) -> set[str]:
        return {n.workflow.name for n in self.nodes if n.workflow is not None}
