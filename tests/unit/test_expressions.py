"""Template expressions: parsing `$.input...`, `$.nodes.<id>...`, `$.item`, the `$$` escape,
and evaluation errors that name the expression and the step that failed."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.expressions import (
    DictT,
    ExpressionError,
    ListT,
    Literal,
    Ref,
    Scope,
    evaluate,
    parse_ref,
    parse_template,
    refs,
    render_ref,
)

OUTPUTS = {"extract": {"rows": [{"id": 7}, {"id": 8}], "n": 2}, "train": [0.1, 0.9]}


def scope(item: Any = None) -> Scope:
    return Scope(
        input={"orders": [{"id": "o1"}], "limit": 5, "odd key": True},
        output=lambda node: OUTPUTS[node],
        item=item,
    )


def run(expression: Any, item: Any = None) -> Any:
    return evaluate(parse_template(expression), scope(item))


# ---- parsing --------------------------------------------------------------------------------


def test_parse_ref_roots_and_paths():
    assert parse_ref("$.input") == Ref("input", None, (), "$.input")
    assert parse_ref("$.input.orders[0].id") == Ref(
        "input", None, ("orders", 0, "id"), "$.input.orders[0].id"
    )
    assert parse_ref("$.nodes.extract") == Ref("nodes", "extract", (), "$.nodes.extract")
    assert parse_ref("$.nodes.train[-1]").path == (-1,)
    assert parse_ref("$.item.name").root == "item"
    assert parse_ref('$.input["odd key"]').path == ("odd key",)
    assert parse_ref('$.nodes["my-node"].x') == Ref(
        "nodes", "my-node", ("x",), '$.nodes["my-node"].x'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$.input..x", r"expression '\$\.input\.\.x': cannot read '\.\.x'"),
        ("$.input[", r"cannot read '\['"),
        ("$.input[x]", r"cannot read '\[x\]'"),
        ("$.input.1st", r"cannot read '\.1st'"),
        ("$.orders", r"expression '\$\.orders': unknown root 'orders'"),
        ("$.nodes", r"'\$\.nodes' must be followed by a node id"),
        ("$.nodes[0]", r"'\$\.nodes' must be followed by a node id"),
    ],
)
def test_parse_ref_syntax_errors_name_the_expression(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse_ref(text)


def test_parse_ref_requires_the_dollar_dot_prefix():
    with pytest.raises(ExpressionError, match="must start with"):
        parse_ref("input.x")


def test_literals_are_not_expressions():
    assert parse_template(3) == Literal(3)
    assert parse_template(None) == Literal(None)
    assert parse_template("plain") == Literal("plain")
    assert parse_template("$5") == Literal("$5")  # only `$.` starts an expression
    assert parse_template({"a": [1, "x"]}) == Literal({"a": [1, "x"]})


def test_double_dollar_escapes_a_literal():
    assert parse_template("$$.input") == Literal("$.input")
    assert parse_template("$$") == Literal("$")
    assert run("$$.5") == "$.5"


def test_escapes_inside_all_literal_lists_and_dicts_are_undone():
    # An all-literal container is folded into one Literal: its escapes must be undone too.
    assert run(["$$.x", "y"]) == ["$.x", "y"]
    assert run({"a": "$$b", "c": {"d": ["$$$"]}}) == {"a": "$b", "c": {"d": ["$$"]}}


def test_templates_with_references_keep_their_structure():
    template = parse_template({"a": ["$.input.limit", 1], "b": "x"})
    assert isinstance(template, DictT)
    assert isinstance(dict(template.items)["a"], ListT)
    assert [r.text for r in refs(template)] == ["$.input.limit"]


def test_refs_lists_every_reference_in_a_template():
    template = parse_template(["$.nodes.a", {"k": "$.nodes.b.x", "l": ["$.item", 3]}])
    assert [(r.root, r.node) for r in refs(template)] == [
        ("nodes", "a"),
        ("nodes", "b"),
        ("item", None),
    ]
    assert list(refs(parse_template("literal"))) == []


def test_render_ref_round_trips_through_parse_ref():
    for root, node, path in [
        ("input", None, ()),
        ("input", None, ("orders", 0, "id")),
        ("nodes", "train", (-1, "loss")),
        ("nodes", "x", ("odd key", "0", "a-b")),
        ("item", None, ("name",)),
    ]:
        text = render_ref(root, node, path)
        assert parse_ref(text) == Ref(root, node, path, text)


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=-1000, max_value=1000),
            st.text(st.characters(codec="ascii", exclude_characters='"'), max_size=12),
        ),
        max_size=6,
    )
)
def test_render_then_parse_is_identity_for_any_path(path):
    text = render_ref("nodes", "n1", tuple(path))
    assert parse_ref(text).path == tuple(path)


# ---- evaluation -----------------------------------------------------------------------------


def test_evaluate_paths_into_input_outputs_and_item():
    assert run("$.input.limit") == 5
    assert run("$.input.orders[0].id") == "o1"
    assert run('$.input["odd key"]') is True
    assert run("$.nodes.extract.rows[1].id") == 8
    assert run("$.nodes.train[-1]") == 0.9
    assert run("$.item.k", item={"k": "v"}) == "v"
    assert run({"n": "$.nodes.extract.n", "all": ["$.input.limit", "$.item"]}, item=1) == {
        "n": 2,
        "all": [5, 1],
    }


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "$.input.missing",
            r"\$\.input\.missing: at step 1 \('missing'\): no key 'missing' "
            r"\(keys: limit, odd key, orders\)",
        ),
        (
            "$.nodes.extract.rows[5]",
            r"\$\.nodes\.extract\.rows\[5\]: at step 2 \(5\): index out of range \(length 2\)",
        ),
        ("$.nodes.train[-3]", r"at step 1 \(-3\): index out of range \(length 2\)"),
        (
            "$.nodes.extract.n.x",
            r"\$\.nodes\.extract\.n\.x: at step 2 \('x'\): expected an object, got int",
        ),
        ("$.nodes.extract.rows.id", r"at step 2 \('id'\): expected an object, got list"),
        ("$.input.limit[0]", r"\$\.input\.limit\[0\]: at step 2 \(0\): expected a list, got int"),
        ("$.item[0]", r"\$\.item\[0\]: at step 1 \(0\): expected a list, got null"),
    ],
)
def test_evaluation_errors_name_the_expression_and_the_step(expression, message):
    with pytest.raises(ExpressionError, match=message):
        run(expression)


def test_evaluation_error_inside_a_nested_template():
    with pytest.raises(ExpressionError, match=r"\$\.input\.nope: at step 1"):
        run({"ok": "$.input.limit", "bad": ["$.input.nope"]})


def test_missing_keys_hint_lists_at_most_ten_keys():
    wide = Scope(input={f"k{i:02}": i for i in range(15)}, output=lambda n: None)
    with pytest.raises(ExpressionError) as info:
        evaluate(parse_template("$.input.zz"), wide)
    assert "k09" in str(info.value)
    assert "k10" not in str(info.value)
