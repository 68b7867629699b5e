"""The @workflow DSL: tracing a function into a WorkflowSpec, and the errors that say what to
use instead of Python control flow. Tasks come from `workers.task`, as in user code.

String annotations (this module's `from __future__ import annotations`, as most user modules
have) are part of what is tested: input schemas must resolve them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import pydantic
import pytest

from orchestrator import Workflow, WorkflowDefinitionError, when, workflow
from orchestrator.core.compiler import compile_spec
from orchestrator.core.expressions import Scope, evaluate
from orchestrator.core.spec import NodeSpec
from orchestrator.dsl.loader import load_module
from orchestrator.errors import ModuleLoadError
from workers import task


class Order(pydantic.BaseModel):
    id: str
    amount: float


@task
def extract(rows: int) -> list[dict[str, Any]]:
    return [{"row": i} for i in range(rows)]


@task
def train(lr: float, data: Any, epochs: int = 1) -> dict[str, float]:
    return {"lr": lr, "score": lr * epochs}


@task
def pick_best(models: list[dict[str, float]]) -> dict[str, float]:
    return max(models, key=lambda m: m["score"])


@task
def publish(model: Any, note: str = "") -> str:
    return f"published {model} {note}".strip()


@task(retries=2, timeout=30, backoff=0.5, backoff_max=10, non_retryable=[KeyError, "BadData"])
def fragile(x: Any) -> Any:
    return x


@task(queue="gpu", name="3d-load")
def load(x: Any) -> Any:
    return x


@task
async def fetch(url: str) -> str:
    return url.upper()


def nodes(wf: Workflow) -> dict[str, NodeSpec]:
    return {n.id: n for n in wf.spec.nodes}


def trace_error(fn: Any) -> str:
    """The message of the WorkflowDefinitionError that tracing `fn` raises."""
    wf = workflow(fn)
    with pytest.raises(WorkflowDefinitionError) as info:
        _ = wf.spec
    return str(info.value)


# ---- what a traced workflow looks like ------------------------------------------------------


def test_parameters_are_bound_from_the_run_input():
    @workflow
    def flow(rows: int):
        return extract(rows)

    assert nodes(flow)["extract"].inputs == {"rows": "$.input.rows"}
    assert flow.spec.output == "$.nodes.extract"


def test_input_schema_comes_from_type_hints_with_defaults():
    @workflow
    def flow(
        rows: int,
        lrs: list[float] = [0.1, 0.2],  # noqa: B006 (a default value, never mutated)
        orders: list[Order] | None = None,
        limit: Annotated[int, pydantic.Field(ge=1)] = 10,
        anything=None,
    ):
        return extract(rows)

    schema = flow.spec.input_schema
    assert schema is not None and "title" not in schema
    assert schema["required"] == ["rows"]
    props = schema["properties"]
    assert props["rows"]["type"] == "integer"
    assert props["lrs"]["default"] == [0.1, 0.2]
    assert props["lrs"]["items"] == {"type": "number"}
    assert props["limit"]["minimum"] == 1 and props["limit"]["default"] == 10
    assert schema["$defs"]["Order"]["required"] == ["id", "amount"]
    assert "type" not in props["anything"]  # no hint: any value
    validator = compile_spec(flow.spec).input_validator
    assert validator.is_valid({"rows": 1, "orders": [{"id": "a", "amount": 2}]})
    assert not validator.is_valid({"rows": 1, "limit": 0})
    assert not validator.is_valid({"lrs": [0.1]})


def test_the_input_schema_refuses_keys_that_name_no_parameter():
    @workflow
    def flow(rows: int = 5, name: str = "x"):
        return extract(rows)

    assert flow.spec.input_schema is not None
    assert flow.spec.input_schema["additionalProperties"] is False
    validator = compile_spec(flow.spec).input_validator
    assert validator.is_valid({"rows": 3})
    assert not validator.is_valid({"m": 3})  # a typo of a parameter, not a silent default


def test_a_workflow_started_by_events_must_take_the_event():
    @workflow(on="com.shop.order.created")
    def on_order(order_id: str = ""):
        return extract(1)

    with pytest.raises(WorkflowDefinitionError) as info:
        _ = on_order.spec
    assert "workflow 'on_order' is started by events (on=...) but has no `event` parameter" in (
        str(info.value)
    )


def test_a_schedule_input_must_fit_the_parameters():
    @workflow(schedule={"cron": "0 * * * *", "input": {"rwos": 3}})
    def hourly(rows: int = 1):
        return extract(rows)

    with pytest.raises(WorkflowDefinitionError) as info:
        _ = hourly.spec
    assert (
        "workflow 'hourly' is invalid:\n  - schedules[0] ('0 * * * *').input: input.rwos: "
        "workflow 'hourly' has no parameter 'rwos' (it takes: rows)"
    ) in str(info.value)


def test_task_calls_become_nodes_wired_to_their_upstream():
    @workflow
    def flow(rows: int):
        data = extract(rows)
        model = train(0.1, data, epochs=3)
        return publish(model)

    spec_nodes = nodes(flow)
    assert list(spec_nodes) == ["extract", "train", "publish"]
    assert spec_nodes["train"].task == "train"
    assert spec_nodes["train"].inputs == {"lr": 0.1, "data": "$.nodes.extract", "epochs": 3}
    assert spec_nodes["publish"].inputs == {"model": "$.nodes.train"}
    compiled = compile_spec(flow.spec)
    assert compiled.order == ("extract", "train", "publish")
    assert compiled.nodes["publish"].deps == {"train"}


def test_paths_into_references():
    @workflow
    def flow(cfg: dict[str, Any]):
        data = extract(cfg["rows"])
        publish(data[0], note=data.meta)
        publish(data[-1]["odd key"], note=cfg.nested.deep)
        return {"first": data[0].row, "all": [data, cfg]}

    spec_nodes = nodes(flow)
    assert spec_nodes["extract"].inputs == {"rows": "$.input.cfg.rows"}
    assert spec_nodes["publish"].inputs == {
        "model": "$.nodes.extract[0]",
        "note": "$.nodes.extract.meta",
    }
    assert spec_nodes["publish_2"].inputs == {
        "model": '$.nodes.extract[-1]["odd key"]',
        "note": "$.input.cfg.nested.deep",
    }
    assert flow.spec.output == {
        "first": "$.nodes.extract[0].row",
        "all": ["$.nodes.extract", "$.input.cfg"],
    }


def test_map_fans_out_over_the_first_free_parameter():
    @workflow
    def flow(rows: int, lrs: list[float]):
        data = extract(rows)
        return train.map(lrs, data=data, epochs=2)

    mapped = nodes(flow)["train"]
    assert mapped.map is not None
    assert (mapped.map.over, mapped.map.param) == ("$.input.lrs", "lr")
    assert mapped.inputs == {"data": "$.nodes.extract", "epochs": 2}


def test_map_skips_parameters_given_by_keyword():
    @workflow
    def flow(datasets: list[Any]):
        return train.map(datasets, lr=0.5)

    mapped = nodes(flow)["train"]
    assert mapped.map is not None and mapped.map.param == "data"
    assert mapped.inputs == {"lr": 0.5}


def test_map_over_a_literal_list_and_over_a_node_output():
    @workflow
    def flow(rows: int):
        data = extract(rows)
        train.map([0.1, 0.2], data=data)
        return publish.map(data["rows"])

    spec_nodes = nodes(flow)
    assert spec_nodes["train"].map is not None
    assert spec_nodes["train"].map.over == [0.1, 0.2]
    assert spec_nodes["publish"].map is not None
    assert spec_nodes["publish"].map.over == "$.nodes.extract.rows"
    assert compile_spec(flow.spec).nodes["publish"].deps == {"extract"}


def test_fan_in_a_downstream_task_receives_the_mapped_outputs():
    @workflow
    def flow(lrs: list[float]):
        models = train.map(lrs, data=None)
        return pick_best(models)

    assert nodes(flow)["pick_best"].inputs == {"models": "$.nodes.train"}
    assert compile_spec(flow.spec).nodes["pick_best"].deps == {"train"}


def test_when_guards_the_nodes_in_its_block_only():
    @workflow
    def flow(rows: int):
        best = pick_best(extract(rows))
        with when(best["score"] > 0.5):
            publish(best)
            publish(best, note="again")
        return publish(best, note="always")

    spec_nodes = nodes(flow)
    for guarded in ("publish", "publish_2"):
        condition = spec_nodes[guarded].when
        assert condition is not None
        assert (condition.value, condition.op, condition.operand) == (
            "$.nodes.pick_best.score",
            "gt",
            0.5,
        )
    assert spec_nodes["publish_3"].when is None
    assert spec_nodes["extract"].when is None


def test_when_on_a_bare_reference_is_a_truthy_condition():
    @workflow
    def flow(dry_run: bool = False):
        with when(dry_run):
            return extract(1)

    condition = nodes(flow)["extract"].when
    assert condition is not None
    assert (condition.value, condition.op) == ("$.input.dry_run", "truthy")


@pytest.mark.parametrize(
    ("build", "op", "operand"),
    [
        (lambda r: r == "ok", "eq", "ok"),
        (lambda r: r != "ok", "ne", "ok"),
        (lambda r: r > 1, "gt", 1),
        (lambda r: r >= 1, "ge", 1),
        (lambda r: r < 1, "lt", 1),
        (lambda r: r <= 1, "le", 1),
        (lambda r: r.is_in(["a", "b"]), "in", ["a", "b"]),
    ],
)
def test_comparison_operators_build_conditions(build, op, operand):
    @workflow
    def flow(status: str):
        with when(build(status)):
            return extract(1)

    condition = nodes(flow)["extract"].when
    assert condition is not None
    assert (condition.value, condition.op, condition.operand) == ("$.input.status", op, operand)


def test_repeated_calls_of_one_task_get_numbered_ids():
    @workflow
    def flow():
        extract(1)
        extract(2)
        return extract(3)

    assert list(nodes(flow)) == ["extract", "extract_2", "extract_3"]
    assert flow.spec.output == "$.nodes.extract_3"


def test_node_ids_are_made_safe_from_task_names():
    @workflow
    def flow():
        return load(1), load(2)

    spec_nodes = nodes(flow)
    # Task names are subject tokens, but a node id must start with a letter or '_'.
    assert list(spec_nodes) == ["_3d-load", "_3d-load_2"]
    assert spec_nodes["_3d-load"].task == "3d-load"
    assert spec_nodes["_3d-load"].queue == "gpu"
    assert flow.spec.output == ["$.nodes._3d-load", "$.nodes._3d-load_2"]


def test_task_options_land_in_the_node_spec():
    @workflow
    def flow():
        return fragile(1)

    spec_node = nodes(flow)["fragile"]
    assert spec_node.retry.max_attempts == 3  # retries=2: two more after the first
    assert spec_node.retry.backoff_s == 0.5
    assert spec_node.retry.backoff_max_s == 10
    assert spec_node.retry.non_retryable == ("KeyError", "BadData")
    assert spec_node.timeout_s == 30
    plain = workflow(lambda: extract(1), name="plain")
    assert nodes(plain)["extract"].retry.max_attempts == 1


def test_with_options_overrides_the_defaults_for_one_call():
    @workflow
    def flow():
        fragile.with_options(retries=0, timeout=5, jitter=0.0, queue="slow")(1)
        return fragile(2)

    first, second = nodes(flow)["fragile"], nodes(flow)["fragile_2"]
    assert (first.retry.max_attempts, first.timeout_s, first.retry.jitter) == (1, 5, 0.0)
    assert first.retry.non_retryable == ("KeyError", "BadData")  # kept
    assert first.queue == "slow"
    assert (second.retry.max_attempts, second.queue) == (3, "default")


def test_literal_strings_starting_with_dollar_stay_literal():
    @workflow
    def flow():
        return publish("$.input.secret", note=["$5", {"k": "$$"}, "plain"])

    spec_node = nodes(flow)["publish"]
    assert spec_node.inputs == {"model": "$$.input.secret", "note": ["$$5", {"k": "$$$"}, "plain"]}
    compiled = compile_spec(flow.spec).nodes["publish"]
    scope = Scope(input={"secret": "leaked"}, output=lambda node: None)
    assert evaluate(compiled.inputs["model"], scope) == "$.input.secret"
    assert evaluate(compiled.inputs["note"], scope) == ["$5", {"k": "$$"}, "plain"]


def test_name_description_and_tasks_of_a_workflow():
    @workflow(name="nightly", description="Runs at night.")
    def flow():
        return fetch("x")

    @workflow
    def documented():
        """Extracts rows."""
        return extract(1)

    assert (flow.name, flow.spec.name) == ("nightly", "nightly")
    assert flow.spec.description == "Runs at night."
    assert documented.spec.description == "Extracts rows."
    assert set(flow.tasks) == {"fetch"}
    assert flow.tasks["fetch"].params == ("url",)
    assert repr(flow) == "<Workflow nightly>"


# ---- errors while tracing -------------------------------------------------------------------


def test_if_on_a_reference():
    def flow(rows: int):
        if extract(rows):
            publish(1)

    message = trace_error(flow)
    assert message.startswith("workflow 'flow': `if`/`and`/`or`/`not` on $.nodes.extract")
    assert "with when(ref > x):" in message


def test_comparison_used_as_a_python_bool():
    def flow(rows: int):
        if extract(rows)["n"] > 3:
            publish(1)

    assert "a comparison on $.nodes.extract.n was used as a Python bool" in trace_error(flow)


def test_for_over_a_reference():
    def flow(rows: int):
        for row in extract(rows):
            publish(row)

    message = trace_error(flow)
    assert "iterating over $.nodes.extract" in message
    assert ".map(ref)" in message


def test_len_and_in_on_a_reference():
    def flow_len(rows: int):
        return publish(len(extract(rows)))

    def flow_in(rows: int):
        return publish("x" in extract(rows))

    assert "len($.nodes.extract): not known" in trace_error(flow_len)
    assert "`in` on $.nodes.extract: use `when(ref.is_in([...]))`" in trace_error(flow_in)


def test_formatting_a_reference_into_a_string():
    def flow_f(rows: int):
        return publish(f"rows: {rows}")

    def flow_str(rows: int):
        return publish(str(extract(rows)))

    def flow_percent(rows: int):
        return publish("rows: %s" % rows)  # noqa: UP031 (the old style must fail as clearly)

    assert "formatting $.input.rows into a string" in trace_error(flow_f)
    assert "formatting $.nodes.extract into a string" in trace_error(flow_str)
    assert "formatting $.input.rows into a string" in trace_error(flow_percent)


@pytest.mark.parametrize(
    "compute",
    [
        lambda r: r + 1,
        lambda r: 1 + r,
        lambda r: r - 1,
        lambda r: 1 - r,
        lambda r: r * 2,
        lambda r: 2 * r,
        lambda r: r / 2,
        lambda r: 2 / r,
        lambda r: r // 2,
        lambda r: 2 // r,
        lambda r: r % 2,
        lambda r: 2 % r,
        lambda r: r**2,
        lambda r: 2**r,
        lambda r: -r,
        lambda r: +r,
        lambda r: abs(r),
    ],
)
def test_arithmetic_on_a_reference(compute):
    def flow(rows: int):
        return publish(compute(extract(rows)))

    assert "arithmetic on $.nodes.extract: its value is not known" in trace_error(flow)


def test_assigning_to_a_reference():
    def flow(rows: int):
        data = extract(rows)
        data.rows = 3
        return data

    assert "$.nodes.extract is read-only" in trace_error(flow)


def test_bad_key_on_a_reference():
    def flow(rows: int):
        return publish(extract(rows)[1.5])

    assert "$.nodes.extract[1.5]: only string keys and integer indexes" in trace_error(flow)


def test_unknown_keyword_argument():
    def flow(rows: int):
        return extract(rows=rows, limit=3)

    assert trace_error(flow) == (
        "workflow 'flow': task 'extract' has no parameter 'limit' (it has: rows)"
    )


def test_missing_required_argument():
    def flow():
        return train(0.1)

    assert trace_error(flow) == "workflow 'flow': task 'train' is missing argument(s): data"


def test_too_many_positional_arguments():
    def flow():
        return extract(1, 2)

    assert trace_error(flow) == "workflow 'flow': task 'extract' takes 1 arguments, 2 were given"


def test_argument_given_twice():
    def flow():
        return extract(1, rows=2)

    assert trace_error(flow) == "workflow 'flow': task 'extract': 'rows' given twice"


def test_map_with_nothing_left_to_map_over():
    def flow(lrs: list[float]):
        return train.map(lrs, lr=0.1, data=None, epochs=1)

    assert "train.map(): every parameter is given by keyword" in trace_error(flow)


def test_unknown_task_option_names_the_node():
    def flow():
        return fragile.with_options(retires=3)(1)

    message = trace_error(flow)
    assert "node 'fragile': unknown task option 'retires'" in message
    assert "known: backoff, backoff_max" in message


def test_nested_when():
    def flow(a: bool, b: bool):
        with when(a), when(b):
            return extract(1)

    assert "nested when() blocks are not supported" in trace_error(flow)


def test_when_takes_a_reference_or_a_comparison():
    def flow():
        with when(True):  # type: ignore[arg-type]
            return extract(1)

    assert "when() takes a task output or a comparison on one, not bool" in trace_error(flow)


def test_when_compares_with_literals_only():
    def flow(rows: int, limit: int):
        with when(extract(rows)["n"] > limit):
            return publish(1)

    assert (
        "when(): $.nodes.extract.n can only be compared with a literal value, "
        "not with $.input.limit"
    ) in trace_error(flow)


def test_when_outside_a_workflow():
    outside = pytest.raises(WorkflowDefinitionError, match=r"only be used inside a @workflow")
    with outside, when(True):  # type: ignore[arg-type]
        pass


def test_comparison_passed_as_an_argument():
    def flow(rows: int):
        return publish(extract(rows) > 1)

    assert "argument 'model' of 'publish': a comparison can only be used in when()" in (
        trace_error(flow)
    )


def test_argument_that_is_not_json():
    def flow():
        return publish(object())

    assert "argument 'model' of 'publish': <object object at" in trace_error(flow)
    assert "is not JSON-serialisable" in trace_error(flow)


def test_async_workflow_function():
    async def flow():
        return extract(1)

    assert trace_error(flow) == (
        "workflow 'flow': a workflow function must be a plain `def` (its tasks may be async)"
    )


def test_workflow_with_no_task():
    def flow(x: int):
        return x

    assert trace_error(flow) == "workflow 'flow' calls no task"


def test_variadic_workflow_parameters():
    def flow(*rows: int):
        return extract(1)

    assert "parameter 'rows' must be a plain named parameter" in trace_error(flow)


def test_a_spec_the_validator_rejects_is_a_definition_error():
    bad_queue = extract.with_options(queue="not a token")

    def flow():
        return bad_queue(1)

    message = trace_error(flow)
    assert message.startswith("workflow 'flow' is invalid:")
    assert "node 'extract': queue 'not a token'" in message


def test_calling_a_workflow_directly():
    @workflow
    def flow():
        return extract(1)

    with pytest.raises(WorkflowDefinitionError, match=r"workflow 'flow' is not called directly"):
        flow()


def test_tracing_is_deferred_until_the_spec_is_needed():
    traced = []

    @workflow
    def flow():
        traced.append(True)
        return later(1)

    @task
    def later(x: int) -> int:  # defined after the workflow that uses it
        return x

    assert traced == []
    assert list(nodes(flow)) == ["later"]
    assert nodes(flow)["later"].inputs == {"x": 1}
    assert traced == [True]  # traced once


# ---- tasks outside a workflow are plain functions --------------------------------------------


def test_calling_a_task_outside_a_workflow_runs_it():
    assert extract(2) == [{"row": 0}, {"row": 1}]
    assert train(0.5, None, epochs=2) == {"lr": 0.5, "score": 1.0}
    assert asyncio.run(fetch("x")) == "X"


def test_map_outside_a_workflow_calls_the_function_per_item():
    assert train.map([0.1, 0.2], data=None, epochs=10) == [
        {"lr": 0.1, "score": 1.0},
        {"lr": 0.2, "score": 2.0},
    ]
    assert extract.map([]) == []


def test_with_options_returns_a_copy_that_still_runs_the_function():
    quick = fragile.with_options(retries=0, queue="fast")
    assert quick(5) == 5
    assert quick.queue == "fast" and quick.name == "fragile"
    assert quick.declaration.defaults["retries"] == 0
    assert fragile.declaration.defaults["retries"] == 2  # the original is unchanged
    assert fragile.queue == "default"


def test_tracing_leaves_no_tracer_behind():
    @workflow
    def flow():
        return extract(1)

    _ = flow.spec
    assert extract(1) == [{"row": 0}]  # a plain call again, not a node reference


def test_declaration_of_a_task():
    declaration = train.declaration
    assert declaration.name == "train"
    assert declaration.params == ("lr", "data", "epochs")
    assert declaration.required == ("lr", "data")
    assert load.declaration.queue == "gpu"
    assert dict(fragile.declaration.defaults) == {
        "retries": 2,
        "timeout": 30,
        "backoff": 0.5,
        "backoff_max": 10,
        "non_retryable": ("KeyError", "BadData"),
    }


def test_map_outside_a_workflow_binds_like_inside() -> None:
    @task
    def scale(factor: int, x: int) -> int:
        return factor * x

    # Inside a workflow `scale.map(items, factor=3)` maps over `x`; called directly, the same.
    assert scale.map([1, 2], factor=3) == [3, 6]


def test_every_problem_of_a_traced_spec_is_in_the_definition_error():
    bad_queue = extract.with_options(queue="not a token")
    other_queue = publish.with_options(queue="q*")

    def flow():
        return other_queue(bad_queue(1))

    message = trace_error(flow)
    assert "node 'extract': queue 'not a token'" in message
    assert "node 'publish': queue 'q*'" in message


# ---- loading a module of workflows -----------------------------------------------------------

FLOWS = """
from orchestrator import workflow
from workers import task


@task
def double(x: int) -> int:
    return 2 * x


@workflow
def twice(x: int = 1):
    return double(double(x))
"""


def test_loading_a_file_collects_its_workflows_and_tasks(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    loaded = load_module(str(tmp_path / "flows.py"))
    assert list(loaded.workflows) == ["twice"]
    assert list(loaded.tasks) == ["double"]
    assert [n.id for n in loaded.workflows["twice"].spec.nodes] == ["double", "double_2"]


def test_a_module_with_a_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "flows.py"
    text = FLOWS + "\n\ndef broken(:\n    pass\n"
    path.write_text(text)
    line = text.splitlines().index("def broken(:") + 1
    before = list(sys.path)
    with pytest.raises(ModuleLoadError) as info:
        load_module(str(path))
    error = info.value
    assert isinstance(error, WorkflowDefinitionError)  # the CLI's exit 2
    assert (error.path, error.line) == (str(path), line)
    assert str(error).startswith(f"{path}, line {line}: syntax error: ")
    assert "def broken(:" in str(error)
    assert "Traceback" not in str(error)
    assert sys.path == before
    assert "conveyor_user_flows" not in sys.modules  # no half-loaded module stays behind


def test_a_syntax_error_names_the_file_as_the_user_gave_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flows.py").write_text("def broken(:\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModuleLoadError, match=r"^flows\.py, line 1: syntax error: "):
        load_module("flows.py")


def test_a_syntax_error_in_a_module_it_imports_names_that_module(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("x = 1\n  y = 2\n")
    (tmp_path / "flows.py").write_text("import helpers\n" + FLOWS)
    with pytest.raises(ModuleLoadError) as info:
        load_module(str(tmp_path / "flows.py"))
    assert (info.value.path, info.value.line) == (str(tmp_path / "helpers.py"), 2)
    assert "syntax error: unexpected indent" in str(info.value)
    sys.modules.pop("helpers", None)


def test_a_dotted_module_with_a_syntax_error_names_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "badflows_pkg").mkdir()
    (tmp_path / "badflows_pkg" / "__init__.py").write_text("")
    (tmp_path / "badflows_pkg" / "flows.py").write_text("return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleLoadError) as info:
        load_module("badflows_pkg.flows")
    assert info.value.path == str(tmp_path / "badflows_pkg" / "flows.py")
    assert info.value.line == 1
    assert "'return' outside function" in str(info.value)
    sys.modules.pop("badflows_pkg", None)


# ---- the DSL does no I/O ---------------------------------------------------------------------


def test_the_dsl_modules_import_nothing_that_does_io() -> None:
    """The DSL's own imports, in a fresh interpreter. The package `__init__`s are bypassed: what
    they import is their own contract, pinned where they are made lazy."""
    probe = textwrap.dedent(
        """
        import sys, types
        for name in ("orchestrator", "events", "workers"):
            package = types.ModuleType(name)
            package.__path__ = [name]
            sys.modules[name] = package
        from orchestrator.dsl import workflow, when, sleep, wait_for_event, subworkflow
        import orchestrator.dsl.loader
        io = {"nats", "aiosqlite", "structlog", "prometheus_client", "rich", "sqlite3"}
        print(sorted({m.split(".")[0] for m in sys.modules} & io))
        """
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
