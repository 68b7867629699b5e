"""What started a run, read from its run.requested envelope (orchestrator.core.trigger)."""

from __future__ import annotations

from typing import Any

import pytest

from events.models import ParentRef, RunRequested
from orchestrator import client
from orchestrator.core import outbox, trigger
from orchestrator.core.trigger import trigger_of
from orchestrator.triggers import router, scheduler


def test_each_publishers_source_is_the_one_the_classification_knows() -> None:
    assert scheduler.SOURCE == trigger.SCHEDULER_SOURCE
    assert router.SOURCE == trigger.ROUTER_SOURCE
    assert outbox.SOURCE == trigger.ORCHESTRATOR_SOURCE
    assert client.SOURCE == trigger.CLIENT_SOURCE


def _of(source: str, request: RunRequested, **envelope: Any) -> dict[str, Any]:
    return trigger_of(
        source=source,
        event_id=envelope.get("event_id", "e-1"),
        subject=envelope.get("subject"),
        extensions=envelope.get("extensions", {}),
        request=request,
    )


def test_a_scheduled_run_names_its_instant() -> None:
    got = _of(
        trigger.SCHEDULER_SOURCE,
        RunRequested(workflow="w"),
        subject="2030-01-01T10:00:00+01:00",
        event_id="abc:requested",
    )
    assert got == {
        "kind": "cron",
        "source": "conveyor/scheduler",
        "event_id": "abc:requested",
        "subject": "2030-01-01T10:00:00+01:00",
        "by": "schedule at 2030-01-01T10:00:00+01:00",
        "detail": {"instant": "2030-01-01T10:00:00+01:00"},
        "traceparent": None,
    }


@pytest.mark.parametrize(
    ("upstream_source", "kind"),
    [("shop/orders", "event"), ("webhook/github", "webhook")],
)
def test_an_upstream_event_names_the_event(upstream_source: str, kind: str) -> None:
    event = {
        "id": "u-1",
        "type": "com.shop.order.created",
        "source": upstream_source,
        "subject": "A-1",
        "data": {"big": "not copied"},
    }
    got = _of(trigger.ROUTER_SOURCE, RunRequested(workflow="w", input={"event": event}))
    assert got["kind"] == kind
    assert got["by"] == f"com.shop.order.created from {upstream_source}"
    assert got["detail"] == {
        "type": "com.shop.order.created",
        "source": upstream_source,
        "id": "u-1",
        "subject": "A-1",
    }


def test_a_sub_workflow_names_its_parent() -> None:
    request = RunRequested(
        workflow="child", parent=ParentRef(run_id="p-1", node_id="step", attempt=2)
    )
    got = _of(trigger.ORCHESTRATOR_SOURCE, request)
    assert got["kind"] == "parent"
    assert got["by"] == "run p-1, node step (attempt 2)"
    assert got["detail"] == {"run_id": "p-1", "node_id": "step", "attempt": 2}


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("conveyor/cli", "cli"),
        ("conveyor/api", "api"),
        ("conveyor/client", "client"),
        ("billing-service", "client"),
    ],
)
def test_a_request_names_its_publisher_and_who_asked(source: str, kind: str) -> None:
    asked = _of(source, RunRequested(workflow="w"), extensions={trigger.ACTOR_EXTENSION: "ada@box"})
    assert (asked["kind"], asked["by"], asked["detail"]) == (kind, "ada@box", {"actor": "ada@box"})
    anonymous = _of(source, RunRequested(workflow="w"))
    assert (anonymous["kind"], anonymous["by"], anonymous["detail"]) == (kind, source, {})
