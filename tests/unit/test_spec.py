"""WorkflowSpec validation and compilation: every problem is reported, each naming its place."""

import json
import re
from typing import Any

import pytest

from orchestrator.core.admission import admit_version
from orchestrator.core.compiler import CompiledSpec, compile_spec, validate_spec
from orchestrator.core.spec import WorkflowSpec
from orchestrator.errors import SpecError


def node(node_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "task": fields.pop("task", "work"), **fields}


def spec(*nodes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": fields.pop("name", "flow"), "nodes": list(nodes), **fields}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        compile_spec(data)
    assert info.value.workflow == data.get("name", "<unnamed>")
    return info.value.problems


def only_problem(data: dict[str, Any]) -> str:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


PIPELINE = spec(
    node("extract", inputs={"rows": "$.input.rows"}),
    node("train", inputs={"data": "$.nodes.extract"}, map={"over": "$.input.lrs", "param": "lr"}),
    node("pick", inputs={"models": "$.nodes.train"}),
    node(
        "publish",
        inputs={"best": "$.nodes.pick"},
        when={"value": "$.nodes.pick.score", "op": "gt", "operand": 0.8},
    ),
    node("audit", depends_on=["extract"]),
    input_schema={"type": "object", "properties": {"rows": {"type": "integer"}}},
    output={"best": "$.nodes.pick", "n": "$.input.rows"},
)


# ---- valid specs ----------------------------------------------------------------------------


def test_compile_orders_nodes_topologically_with_their_dependencies():
    compiled = compile_spec(PIPELINE)
    assert isinstance(compiled, CompiledSpec)
    assert (compiled.name, compiled.version) == ("flow", 0)
    order = compiled.order
    assert set(order) == {"extract", "train", "pick", "publish", "audit"}
    for node_id, compiled_node in compiled.nodes.items():
        assert all(order.index(dep) < order.index(node_id) for dep in compiled_node.deps)
    assert compiled.nodes["extract"].deps == frozenset()
    assert compiled.nodes["train"].deps == {"extract"}
    assert compiled.nodes["publish"].deps == {"pick"}  # from `when` and inputs
    assert compiled.nodes["audit"].deps == {"extract"}  # from depends_on
    assert sorted(compiled.dependents["extract"]) == ["audit", "train"]
    assert compiled.dependents["publish"] == ()


def test_compile_parses_templates_once():
    compiled = compile_spec(PIPELINE)
    train = compiled.nodes["train"]
    assert train.over is not None and train.inputs["data"] is not None
    assert compiled.nodes["publish"].when is not None
    assert compiled.nodes["extract"].when is None and compiled.nodes["extract"].over is None


def test_compile_builds_an_input_validator_from_the_schema():
    compiled = compile_spec(PIPELINE)
    assert compiled.input_validator.is_valid({"rows": 3})
    assert not compiled.input_validator.is_valid({"rows": "three"})
    assert compile_spec(spec(node("a"))).input_validator is None


def test_references_in_map_over_and_when_are_dependencies():
    compiled = compile_spec(
        spec(
            node("a"),
            node("b"),
            node("c", map={"over": "$.nodes.a.items", "param": "x"}, when={"value": "$.nodes.b"}),
        )
    )
    assert compiled.nodes["c"].deps == {"a", "b"}


def test_validate_spec_returns_a_spec_for_a_mapping_and_the_same_spec_for_a_spec():
    validated = validate_spec(PIPELINE)
    assert isinstance(validated, WorkflowSpec)
    assert validated.nodes[1].map is not None and validated.nodes[1].map.param == "lr"
    assert validate_spec(validated) is validated


def test_spec_round_trips_through_json():
    validated = validate_spec(PIPELINE)
    again = validate_spec(json.loads(validated.model_dump_json()))
    assert again == validated


def test_defaults_of_a_minimal_node():
    only = validate_spec(spec(node("a"))).nodes[0]
    assert only.queue == "default"
    assert only.retry.max_attempts == 1
    assert only.timeout_s is None and only.when is None and only.map is None


def test_mapped_node_may_use_item_in_its_inputs():
    compiled = compile_spec(
        spec(node("a", inputs={"name": "$.item.name"}, map={"over": "$.input.xs", "param": "x"}))
    )
    assert "name" in compiled.nodes["a"].inputs


# ---- each problem, with its place -----------------------------------------------------------


def test_cycle_shows_its_path():
    data = spec(node("a", inputs={"x": "$.nodes.b"}), node("b", depends_on=["a"]))
    assert only_problem(data) == "cycle: a -> b -> a"


def test_longer_cycle_shows_its_path_and_not_the_nodes_hanging_off_it():
    data = spec(
        node("a", depends_on=["c"]),
        node("b", depends_on=["a"]),
        node("c", depends_on=["b"]),
        node("_tail", depends_on=["b"]),  # sorts first: the search for the cycle starts here
        node("free"),
    )
    assert only_problem(data) == "cycle: b -> a -> c -> b"


def test_node_referring_to_itself():
    assert only_problem(spec(node("a", depends_on=["a"]))) == "node 'a': refers to itself"
    assert only_problem(spec(node("a", inputs={"x": "$.nodes.a.y"}))) == (
        "node 'a': refers to itself"
    )


@pytest.mark.parametrize(
    "place",
    [
        {"inputs": {"x": "$.nodes.extrct.rows"}},
        {"depends_on": ["extrct"]},
        {"when": {"value": "$.nodes.extrct", "op": "truthy"}},
        {"map": {"over": "$.nodes.extrct", "param": "x"}},
    ],
    ids=["inputs", "depends_on", "when", "map.over"],
)
def test_unknown_node_reference_suggests_the_close_one(place):
    data = spec(node("extract"), node("load", **place))
    assert only_problem(data) == (
        "node 'load': refers to unknown node 'extrct' (did you mean 'extract'?)"
    )


def test_unknown_node_reference_without_a_close_match_has_no_suggestion():
    data = spec(node("extract"), node("load", depends_on=["zzz"]))
    assert only_problem(data) == "node 'load': refers to unknown node 'zzz'"


def test_unknown_node_in_output():
    data = spec(node("extract"), output={"rows": "$.nodes.extrac.rows"})
    assert only_problem(data) == (
        "output: refers to unknown node 'extrac' (did you mean 'extract'?)"
    )


@pytest.mark.parametrize(
    ("place", "where", "message"),
    [
        ({"inputs": {"x": "$.input..x"}}, "input 'x'", r"cannot read '\.\.x'"),
        ({"inputs": {"x": {"deep": ["$.bogus"]}}}, "input 'x'", r"unknown root 'bogus'"),
        ({"when": {"value": "$.nodes"}}, "when", r"must be followed by a node id"),
        ({"map": {"over": "$.input[", "param": "x"}}, "map.over", r"cannot read '\['"),
    ],
)
def test_bad_expression_syntax_names_node_and_place(place, where, message):
    found = only_problem(spec(node("a", **place)))
    assert found.startswith(f"node 'a': {where}: expression ")
    assert re.search(message, found)


def test_bad_expression_in_output():
    found = only_problem(spec(node("a"), output="$.nodes.a..x"))
    assert found.startswith("output: expression '$.nodes.a..x': cannot read")


def test_duplicate_id():
    assert only_problem(spec(node("a"), node("a"))) == (
        "node 'a': duplicate id (node ids must be unique)"
    )


def test_unknown_task_option_names_node_and_option():
    assert only_problem(spec(node("a"), node("train", retires=3))) == (
        "node 'train': unknown option 'retires'"
    )


def test_unknown_nested_option_names_where_it_is():
    found = only_problem(spec(node("train", retry={"max_attempt": 3})))
    assert found == "node 'train': unknown option 'max_attempt' in 'retry'"


def test_unknown_top_level_option():
    assert only_problem(spec(node("a"), nodez=[])) == "unknown option 'nodez'"


def test_invalid_option_value_names_node_and_field():
    found = only_problem(spec(node("a", retry={"max_attempts": 0})))
    assert found.startswith("node 'a': retry.max_attempts: Input should be greater than")
    found = only_problem(spec(node("b", timeout_s=0)))
    assert found.startswith("node 'b': timeout_s: Input should be greater than 0")
    found = only_problem(spec(node("c", when={"value": 1, "op": "bigger"})))
    assert found.startswith("node 'c': when.op: Input should be 'truthy'")


def test_missing_id_of_a_node_is_placed_by_index():
    assert problems(spec({"task": "t"}, {"id": "b", "task": "t"})) == [
        "nodes[0]: id: Field required",
    ]


def test_a_node_is_exactly_one_kind():
    assert problems(spec({"id": "b"})) == [
        "node 'b': give exactly one of task, sleep, wait_for or workflow (got none)"
    ]
    both = {"id": "b", "task": "t", "sleep": {"seconds": 1}}
    assert problems(spec(both)) == [
        "node 'b': give exactly one of task, sleep, wait_for or workflow (got task, sleep)"
    ]


def test_sleep_needs_seconds_or_until_and_wait_match_expressions_are_dependencies():
    assert problems(spec({"id": "s", "sleep": {}})) == [
        "node 's': sleep needs exactly one of seconds or until"
    ]
    compiled = compile_spec(
        spec(
            node("a"),
            {"id": "w", "wait_for": {"type": "t", "match": {"subject": "$.nodes.a.id"}}},
            {"id": "s", "sleep": {"until": "$.nodes.a.at"}},
        )
    )
    assert compiled.nodes["w"].deps == {"a"}
    assert compiled.nodes["s"].deps == {"a"}
    assert compiled.nodes["w"].kind == "wait_for"


def test_schedules_and_triggers_are_validated():
    bad = spec(node("a"))
    bad["schedules"] = [
        {"cron": "61 * * * *"},
        {"cron": "0 * * * *", "timezone": "Mars/Olympus"},
    ]
    bad["on"] = [{"exact": {"type": "x"}}, {"regex": {"type": "x"}}, {"all": []}]
    assert problems(bad) == [
        "schedules[0]: cron expression '61 * * * *' is not valid (5 fields: minute hour day "
        "month weekday, or 6 with seconds)",
        "schedules[1]: unknown time zone 'Mars/Olympus' (use an IANA name, e.g. 'Europe/Paris')",
        "on[1]: unknown filter dialect 'regex' (use one of: exact, prefix, suffix, all, any, not)",
        "on[2].all: expected a non-empty list of filters",
    ]


def test_a_new_version_whose_schedule_input_does_not_fit_its_schema_is_refused():
    """The YAML/JSON path (and the registry) check what the DSL checks: one home, admission."""
    data = spec(node("a", inputs={"rows": "$.input.rows"}))
    data["input_schema"] = {
        "type": "object",
        "properties": {"rows": {"type": "integer"}},
        "additionalProperties": False,
    }
    data["schedules"] = [
        {"cron": "0 * * * *", "input": {"rows": "three"}},
        {"cron": "30 * * * *", "input": {"rows": 3}},
        {"cron": "45 * * * *", "input": {"rwos": 3}},
    ]
    compile_spec(data)  # a stored version still compiles: admission is for new versions only
    with pytest.raises(SpecError) as info:
        admit_version(data)
    assert info.value.problems == [
        "schedules[0] ('0 * * * *').input: input.rows: 'three' is not of type 'integer'",
        "schedules[2] ('45 * * * *').input: input.rwos: workflow 'flow' has no parameter 'rwos' "
        "(it takes: rows)",
    ]


def test_missing_name_and_no_nodes():
    assert problems({"nodes": [node("a")]}) == ["name: Field required"]
    assert only_problem(spec()).startswith("nodes: Tuple should have at least 1 item")


@pytest.mark.parametrize("bad", ["1a", "a.b", "a b", "x" * 65, "", "a\n"])
def test_bad_node_id(bad):
    assert only_problem(spec(node(bad))) == (
        f"node {bad!r}: id must start with a letter or '_' and hold only letters, "
        "digits, '_' or '-' (at most 64)"
    )


@pytest.mark.parametrize("bad", ["gpu.large", "a b", "q*", "", "gpu\n"])
def test_bad_queue_name(bad):
    assert only_problem(spec(node("a", queue=bad))) == (
        f"node 'a': queue {bad!r} must hold only letters, digits, '_', '-'"
    )


def test_item_outside_a_mapped_node():
    assert only_problem(spec(node("a", inputs={"x": "$.item.id"}))) == (
        "node 'a': input 'x': '$.item.id' is only valid in a mapped node"
    )
    assert only_problem(spec(node("a", when={"value": "$.item"}))) == (
        "node 'a': when: '$.item' is only valid in a mapped node"
    )
    assert only_problem(spec(node("a"), output=["$.item"])) == (
        "output: $.item is only valid in a mapped node"
    )


def test_item_in_map_over():
    data = spec(node("a", map={"over": "$.item.xs", "param": "x"}))
    assert only_problem(data) == "node 'a': map.over cannot use $.item"


def test_map_param_also_in_inputs():
    data = spec(node("a", inputs={"lr": 0.1}, map={"over": "$.input.lrs", "param": "lr"}))
    assert only_problem(data) == (
        "node 'a': map.param 'lr' is also given in inputs; the mapped element is bound to it"
    )


def test_invalid_input_schema():
    found = only_problem(spec(node("a"), input_schema={"type": "nope"}))
    assert found.startswith("input_schema is not a valid JSON Schema: 'nope' is not valid")


@pytest.mark.parametrize("bad", ["1flow", "my flow", "_flow", "a" * 65, "fl.ow", "flow\n"])
def test_bad_workflow_name(bad):
    found = only_problem(spec(node("a"), name=bad))
    assert found == (
        f"name {bad!r} must start with a letter and hold only letters, digits, '_' or '-'"
    )


def test_every_problem_is_reported_at_once():
    data = spec(
        node("a", queue="bad queue"),
        node("a"),
        node("b", inputs={"x": "$.nodes.nope", "y": "$.item"}),
        name="9lives",
    )
    found = problems(data)
    assert len(found) == 5
    assert any(p.startswith("name '9lives'") for p in found)
    assert "node 'a': duplicate id (node ids must be unique)" in found
    assert any(p.startswith("node 'a': queue 'bad queue'") for p in found)
    assert "node 'b': refers to unknown node 'nope'" in found
    assert "node 'b': input 'y': '$.item' is only valid in a mapped node" in found


def test_spec_error_message_lists_each_problem():
    with pytest.raises(SpecError) as info:
        compile_spec(spec(node("a", depends_on=["x"]), node("b", depends_on=["y"])))
    assert str(info.value) == (
        "workflow 'flow' is invalid:\n"
        "  - node 'a': refers to unknown node 'x'\n"
        "  - node 'b': refers to unknown node 'y'"
    )


def test_validate_spec_raises_like_compile_spec():
    with pytest.raises(SpecError, match=r"cycle: a -> b -> a"):
        validate_spec(spec(node("a", depends_on=["b"]), node("b", depends_on=["a"])))


def test_a_spec_that_is_not_an_object():
    with pytest.raises(SpecError, match="a workflow spec is an object, got list"):
        compile_spec([node("a")])  # type: ignore[arg-type]


def test_a_constructed_spec_is_checked_too():
    constructed = WorkflowSpec.model_validate(spec(node("a", depends_on=["b"])))
    with pytest.raises(SpecError, match=r"node 'a': refers to unknown node 'b'"):
        validate_spec(constructed)


def test_item_in_the_condition_of_a_mapped_node_is_refused() -> None:
    spec = {
        "name": "w",
        "nodes": [
            {
                "id": "m",
                "task": "t",
                "map": {"over": "$.input.xs", "param": "x"},
                "when": {"value": "$.item.on"},
            }
        ],
    }
    with pytest.raises(SpecError, match=r"node 'm': when cannot use \$\.item"):
        compile_spec(spec)


# ---- problems pydantic finds do not hide the others -------------------------------------------


def test_a_node_pydantic_refuses_does_not_hide_the_problems_elsewhere():
    data = spec(node("a", retires=3), node("b", depends_on=["zzz"]), name="9lives")
    assert problems(data) == [
        "node 'a': unknown option 'retires'",
        "name '9lives' must start with a letter and hold only letters, digits, '_' or '-'",
        "node 'b': refers to unknown node 'zzz'",
    ]


def test_a_refused_node_still_exists_for_references_and_counts_in_the_id_checks():
    data = spec(
        node("a", timeout_s=0),
        node("b", depends_on=["r"], inputs={"x": "$.nodes.r.y"}),
        node("r", retires=2),
        node("a"),
        node("1x", retires=1),
        output="$.nodes.r",
    )
    found = problems(data)
    assert found[:3] == [
        "node 'a': timeout_s: Input should be greater than 0",
        "node 'r': unknown option 'retires'",
        "node '1x': unknown option 'retires'",
    ]
    assert sorted(found[3:]) == [
        "node '1x': id must start with a letter or '_' and hold only letters, digits, '_' or '-' "
        "(at most 64)",
        "node 'a': duplicate id (node ids must be unique)",
    ]


def test_a_refused_top_level_field_does_not_hide_the_problems_of_the_nodes():
    data = spec(node("a", depends_on=["zzz"]), schedules=[{"cron": "* * * * *", "catchup": 1}])
    found = problems(data)
    assert len(found) == 2, found
    assert found[0].startswith("schedules.0.catchup: Input should be 'none', 'latest' or 'all'")
    assert found[1] == "node 'a': refers to unknown node 'zzz'"


def test_a_refused_name_is_reported_once_and_the_nodes_are_still_checked():
    with pytest.raises(SpecError) as info:
        compile_spec({"name": 5, "nodes": [node("a", queue="a b")]})
    assert info.value.workflow == "5"
    assert info.value.problems == [
        "name: Input should be a valid string",
        "node 'a': queue 'a b' must hold only letters, digits, '_', '-'",
    ]


def test_when_no_node_can_be_read_the_rest_is_still_checked():
    data = spec(node("a", retires=3), input_schema={"type": "nope"}, output="$.nodes.b")
    found = problems(data)
    assert found[0] == "node 'a': unknown option 'retires'"
    assert found[1].startswith("input_schema is not a valid JSON Schema")
    assert found[2] == "output: refers to unknown node 'b'"
    assert len(found) == 3


@pytest.mark.parametrize("bad", [-1, float("nan"), True, "soon", [1]])
def test_sleep_seconds_must_be_a_number_at_least_zero_or_an_expression(bad):
    assert only_problem(spec({"id": "s", "sleep": {"seconds": bad}})) == (
        f"node 's': sleep.seconds must be a number >= 0 or an expression, got {bad!r}"
    )
