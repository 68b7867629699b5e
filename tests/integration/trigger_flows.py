"""Workflows for the trigger, wait, sleep and sub-workflow tests."""

from __future__ import annotations

from typing import Any

from orchestrator import sleep, subworkflow, wait_for_event, workflow
from workers import NonRetryableError, task


@task
def double(x: int) -> int:
    return 2 * x


@task
def shout(text: str) -> str:
    return text.upper()


@task
def describe(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": event["type"], "subject": event["subject"], "data": event["data"]}


@task
def refuse(x: int) -> int:
    raise NonRetryableError(f"child refuses {x}")


@workflow
def child_double(x: int) -> int:
    return double(x)


@workflow
def child_refuses(x: int) -> int:
    return refuse(x)


@workflow
def parent_of_double(x: int = 4) -> dict[str, int]:
    result = subworkflow(child_double, x=x)
    return {"child": result, "again": double(result)}


@workflow
def parent_of_refusal(x: int = 1) -> int:
    return subworkflow(child_refuses, x=x)


@workflow
def parent_of_missing_version(x: int = 1) -> int:
    return subworkflow("child_double", version=99, x=x)


@workflow
def naps(seconds: float = 0.3) -> dict[str, Any]:
    nap = sleep(seconds)
    return {"nap": nap, "after": shout("awake")}


@workflow
def awaits_approval(order: str) -> dict[str, Any]:
    approval = wait_for_event("com.shop.order.approved", match={"subject": order}, timeout=30)
    return {"approved_by": approval["data"]["by"], "said": shout(approval["data"]["note"])}


@workflow
def awaits_briefly(order: str) -> Any:
    return wait_for_event("com.shop.order.approved", match={"subject": order}, timeout=0.3)


@workflow
def awaits_with_default(order: str) -> Any:
    return wait_for_event(
        "com.shop.order.approved", match={"subject": order}, timeout=0.3, default="auto"
    )


@workflow(on="com.shop.order.created")
def on_order(event: dict[str, Any]) -> dict[str, Any]:
    return describe(event)


@workflow(on={"all": [{"prefix": {"source": "sensors/"}}, {"not": {"exact": {"subject": "test"}}}]})
def on_sensor(event: dict[str, Any]) -> dict[str, Any]:
    return describe(event)


@workflow(
    on={
        "all": [
            {"exact": {"type": "io.conveyor.run.succeeded"}},
            {"exact": {"subject": "child_double"}},
        ]
    }
)
def after_child_double(event: dict[str, Any]) -> dict[str, Any]:
    return describe(event)


@workflow(schedule={"cron": "0 * * * *", "timezone": "Europe/Paris", "input": {"x": 1}})
def hourly(x: int = 0) -> int:
    return double(x)


@workflow(schedule={"cron": "*/10 * * * *", "catchup": "all", "max_catchup": 3})
def every_ten_all(x: int = 0) -> int:
    return double(x)


@workflow(schedule={"cron": "*/10 * * * *", "catchup": "none"})
def every_ten_none(x: int = 0) -> int:
    return double(x)


TASKS = [double, shout, describe, refuse]
