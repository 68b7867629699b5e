"""Flow control as written: the DSL and the YAML/JSON spec give the same fields, and bad
configuration is a registration error naming the workflow and the field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from orchestrator import workflow
from orchestrator.core.compiler import compile_spec
from orchestrator.errors import SpecError, WorkflowDefinitionError
from workers import task


@task(concurrency={"limit": 1, "key": "$.input.account"}, rate_limit="10/s")
def charge(account: str, amount: int) -> str:
    return account


@task
def ship(item: int) -> int:
    return item


@workflow(concurrency={"limit": 2, "key": "$.input.customer"}, priority=7)
def checkout(customer: str, account: str, items: list[int]) -> Any:
    charge(account, 5)
    return ship.map(items, max_parallel=10)


@workflow(on="com.shop.order.created", debounce={"period": 5, "key": "$.subject"})
def debounced(event: dict[str, Any], count: int = 1) -> Any:
    return ship(1)


YAML = """
name: checkout
input_schema:
  type: object
  properties: {customer: {type: string}, account: {type: string}, items: {type: array}}
concurrency: {limit: 2, key: $.input.customer}
priority: 7
nodes:
  - id: charge
    task: charge
    inputs: {account: $.input.account, amount: 5}
    concurrency: {limit: 1, key: $.input.account}
    rate_limit: 10/s
  - id: ship
    task: ship
    map: {over: $.input.items, param: item, max_parallel: 10}
"""


def test_the_dsl_and_yaml_give_the_same_flow_control() -> None:
    from_dsl = compile_spec(checkout.spec)
    from_yaml = compile_spec(yaml.safe_load(YAML))
    for compiled in (from_dsl, from_yaml):
        assert (compiled.flow.limit, compiled.flow.priority) == (2, 7)
        assert compiled.flow.key is not None and compiled.flow.key.text == "$.input.customer"
        charge_node = compiled.nodes["charge"]
        assert [(g.scope, g.limit, g.per_s) for g in charge_node.limits] == [
            ("task", 1, None),
            ("rate", 10, 1.0),
        ]
        assert compiled.nodes["ship"].max_parallel == 10
    spec = checkout.spec
    assert spec.concurrency is not None and spec.concurrency.on_limit == "queue"
    assert debounced.spec.debounce is not None and debounced.spec.debounce.period == 5


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("concurrency", 0, "concurrency.limit must be a whole number from 1"),
        ("concurrency", {"limit": 2, "on_limit": "drop"}, "concurrency.on_limit"),
        ("concurrency", {"limit": 2, "key": "$.input.nobody"}, "refers to nothing"),
        ("concurrency", {"limit": 2, "key": "$.nodes.a"}, "must be an expression over the run"),
        ("priority", 11, "priority must be a whole number from 1 to 10"),
        ("debounce", {"period": 5}, "debounce applies to event triggers"),
        ("batch", {"max_size": 0, "max_wait": 1}, "batch.max_size"),
    ],
)
def test_bad_workflow_flow_control_is_a_registration_error(
    field: str, value: Any, problem: str
) -> None:
    spec = {
        "name": "wf",
        "input_schema": {"type": "object", "properties": {"customer": {}}},
        "nodes": [{"id": "a", "task": "t"}],
        field: value,
    }
    with pytest.raises(SpecError) as caught:
        compile_spec(spec)
    assert caught.value.workflow == "wf"
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"rate_limit": "10/fortnight"},
            "rate_limit '10/fortnight': its period 'fortnight' cannot be read",
        ),
        ({"rate_limit": "ten/s"}, "rate_limit 'ten/s' cannot be read"),
        ({"rate_limit": {"limit": 5, "per": 0}}, "rate_limit.per must be a number of seconds > 0"),
        ({"rate_limit": {"limit": 100_000}}, "rate_limit.limit must be a whole number from 1"),
        (
            {"concurrency": {"limit": 1, "key": "$.input.acount"}},
            "concurrency.key '$.input.acount' refers to nothing: the task's input has no 'acount'",
        ),
        ({"map": {"over": [1], "param": "p", "max_parallel": 0}}, "map.max_parallel"),
    ],
)
def test_bad_task_flow_control_names_its_node_and_field(
    fields: dict[str, Any], problem: str
) -> None:
    node = {"id": "pay", "task": "t", "inputs": {"account": "$.input.account"}, **fields}
    with pytest.raises(SpecError) as caught:
        compile_spec({"name": "wf", "nodes": [node]})
    assert f"node 'pay': {problem}" in str(caught.value)


def test_limits_apply_to_task_nodes_only() -> None:
    node = {"id": "nap", "sleep": {"seconds": 1}, "concurrency": 2}
    with pytest.raises(SpecError, match="concurrency and rate_limit apply to task nodes"):
        compile_spec({"name": "wf", "nodes": [node]})


def test_a_bad_task_option_is_a_definition_error_naming_the_workflow() -> None:
    @task(rate_limit="10/q")
    def call() -> None: ...

    @workflow
    def uses_it() -> None:
        call()

    with pytest.raises(
        WorkflowDefinitionError, match=r"(?s)workflow 'uses_it'.*node 'call': rate_limit '10/q'"
    ):
        _ = uses_it.spec


def test_a_task_with_limits_still_runs_as_a_plain_function() -> None:
    assert charge("acct", 1) == "acct"
    assert ship.map([1, 2], max_parallel=1) == [1, 2]


@pytest.mark.parametrize(
    ("collect", "problem"),
    [
        (
            {"batch": {"max_size": 10, "max_wait": 1}},
            "batch: its runs get {events, count} as input, but the input schema has no 'events' "
            "or 'count' and takes no other keys (in Python: def collected(events: list[dict], "
            "count: int))",
        ),
        (
            {"debounce": {"period": 1}},
            "debounce: its runs get {event, count} as input, but the input schema has no "
            "'count' and takes no other keys (in Python: def collected(event: dict, count: int))",
        ),
    ],
)
def test_a_collected_workflow_must_take_the_input_its_runs_get(
    collect: dict[str, Any], problem: str
) -> None:
    """A debounced run's input is {event, count}, a batched one's {events, count}; a schema
    that refuses other keys (every DSL workflow's) must name them, or every run the collector
    starts would be refused: a definition error instead, and for YAML a registration error."""

    @workflow(on="com.shop.order.created", **collect)
    def collected(event: dict[str, Any]) -> Any:
        return ship(1)

    with pytest.raises(WorkflowDefinitionError, match="workflow 'collected' is invalid") as caught:
        _ = collected.spec
    assert problem in str(caught.value)
    schema = {"type": "object", "properties": {"event": {}}, "additionalProperties": False}
    spec = {"name": "collected", "on": [{"exact": {"type": "t"}}], "input_schema": schema}
    with pytest.raises(SpecError) as refused:
        compile_spec({**spec, **collect, "nodes": [{"id": "a", "task": "t"}]})
    assert refused.value.workflow == "collected" and problem in str(refused.value)
    # A schema that takes any other key takes these.
    del schema["additionalProperties"]
    compile_spec({**spec, **collect, "nodes": [{"id": "a", "task": "t"}]})
