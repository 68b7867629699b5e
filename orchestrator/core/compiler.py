"""A workflow spec compiled for the machine: validated fully, expressions parsed, nodes in
topological order. `compile_spec` either returns a `CompiledSpec` or raises `SpecError` listing
every problem with its place (`node 'train': ...`); nothing is registered on error.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import croniter
import jsonschema
from pydantic import ValidationError

from events.filters import FilterError, check_filter
from events.ids import is_token
from orchestrator.core.expressions import (
    NODE_ID,
    ExpressionError,
    Ref,
    Template,
    parse_template,
    refs,
)
from orchestrator.core.spec import NODE_KINDS, WORKFLOW_NAME, NodeSpec, Schedule, WorkflowSpec
from orchestrator.errors import SpecError

# ---- compiled form ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledNode:
    spec: NodeSpec
    inputs: Mapping[str, Template]
    when: Template | None
    over: Template | None
    deps: frozenset[str]
    until: Template | None = None
    match: Mapping[str, Template] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        spec = self.spec
        if spec.sleep is not None:
            return "sleep"
        if spec.wait_for is not None:
            return "wait_for"
        if spec.workflow is not None:
            return "workflow"
        return "task"


@dataclass(frozen=True, slots=True)
class CompiledSpec:
    spec: WorkflowSpec
    nodes: Mapping[str, CompiledNode]
    order: tuple[str, ...]  # topological
    output: Template
    dependents: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    input_validator: Any = None  # a jsonschema validator, when the spec has an input schema

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int:
        return self.spec.version


def validate_spec(data: WorkflowSpec | Mapping[str, Any]) -> WorkflowSpec:
    """Check `data` fully; raise SpecError with every problem found."""
    compile_spec(data)
    return data if isinstance(data, WorkflowSpec) else WorkflowSpec.model_validate(data)


def compile_spec(data: WorkflowSpec | Mapping[str, Any]) -> CompiledSpec:
    if not isinstance(data, WorkflowSpec | Mapping):
        raise SpecError("<unnamed>", [f"a workflow spec is an object, got {type(data).__name__}"])
    name = str(data.name if isinstance(data, WorkflowSpec) else data.get("name", "<unnamed>"))
    if isinstance(data, WorkflowSpec):
        spec = data
    else:
        try:
            spec = WorkflowSpec.model_validate(data)
        except ValidationError as exc:
            raise SpecError(name, _pydantic_problems(exc, data)) from None
    problems: list[str] = []
    if not WORKFLOW_NAME.match(spec.name):
        problems.append(
            f"name {spec.name!r} must start with a letter and hold only letters, digits, '_' or '-'"
        )
    if spec.input_schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(spec.input_schema)
        except jsonschema.SchemaError as exc:
            problems.append(f"input_schema is not a valid JSON Schema: {exc.message}")

    ids = [n.id for n in spec.nodes]
    seen: set[str] = set()
    for node_id in ids:
        if node_id in seen:
            problems.append(f"node {node_id!r}: duplicate id (node ids must be unique)")
        seen.add(node_id)
        if not NODE_ID.match(node_id):
            problems.append(
                f"node {node_id!r}: id must start with a letter or '_' and hold only letters, "
                "digits, '_' or '-' (at most 64)"
            )

    compiled: dict[str, CompiledNode] = {}
    for node in spec.nodes:
        where = f"node {node.id!r}"
        if not is_token(node.queue):
            problems.append(
                f"{where}: queue {node.queue!r} must hold only letters, digits, '_', '-'"
            )
        node_refs: list[tuple[str, Ref]] = []

        def parse(
            value: Any,
            place: str,
            where: str = where,
            node_refs: list[tuple[str, Ref]] = node_refs,
        ) -> Template | None:
            try:
                template = parse_template(value)
            except ExpressionError as exc:
                problems.append(f"{where}: {place}: {exc}")
                return None
            node_refs.extend((place, r) for r in refs(template))
            return template

        kinds = [k for k in NODE_KINDS if getattr(node, k) is not None]
        if len(kinds) != 1:
            problems.append(
                f"{where}: give exactly one of task, sleep, wait_for or workflow "
                f"(got {', '.join(kinds) or 'none'})"
            )
        if node.map is not None and node.task is None:
            problems.append(f"{where}: only a task node can be mapped")
        if node.timeout_s is not None and node.task is None:
            problems.append(f"{where}: timeout_s applies to task nodes (a wait has its own)")
        until = None
        if node.sleep is not None:
            if (node.sleep.seconds is None) == (node.sleep.until is None):
                problems.append(f"{where}: sleep needs exactly one of seconds or until")
            if node.sleep.until is not None:
                until = parse(node.sleep.until, "sleep.until")
            seconds = node.sleep.seconds
            if isinstance(seconds, bool) or (
                not isinstance(seconds, int | float | str | type(None))
                or (isinstance(seconds, int | float) and seconds < 0)
                or (isinstance(seconds, str) and not seconds.startswith("$."))
            ):
                problems.append(
                    f"{where}: sleep.seconds must be a number >= 0 or an expression, "
                    f"got {seconds!r}"
                )
            elif seconds is not None:
                until = parse(seconds, "sleep.seconds")
        match: dict[str, Template] = {}
        if node.wait_for is not None:
            for attr, value in node.wait_for.match.items():
                parsed = parse(value, f"wait_for.match.{attr}")
                if parsed is not None:
                    match[attr] = parsed
        inputs = {k: parse(v, f"input {k!r}") for k, v in node.inputs.items()}
        when = parse(node.when.value, "when") if node.when else None
        over = parse(node.map.over, "map.over") if node.map else None
        if node.map and node.map.param in node.inputs:
            problems.append(
                f"{where}: map.param {node.map.param!r} is also given in inputs; the mapped "
                "element is bound to it"
            )
        deps = set(node.depends_on)
        for place, ref in node_refs:
            if ref.root == "item" and node.map is None:
                problems.append(f"{where}: {place}: {ref.text!r} is only valid in a mapped node")
            if ref.root == "item" and place == "map.over":
                problems.append(f"{where}: map.over cannot use $.item")
            if ref.root == "item" and place == "when" and node.map is not None:
                # A condition is decided once for the whole node, before there is any item.
                problems.append(
                    f"{where}: when cannot use $.item (the condition is decided once for the "
                    "whole mapped node; filter the list in an upstream task instead)"
                )
            if ref.node is not None:
                deps.add(ref.node)
        for dep in sorted(deps):
            if dep not in seen:
                problems.append(f"{where}: refers to unknown node {dep!r}{_suggest(dep, ids)}")
            elif dep == node.id:
                problems.append(f"{where}: refers to itself")
        compiled[node.id] = CompiledNode(
            node,
            {k: v for k, v in inputs.items() if v is not None},
            when,
            over,
            frozenset(d for d in deps if d in seen and d != node.id),
            until,
            match,
        )

    for index, schedule in enumerate(spec.schedules):
        problems.extend(f"schedules[{index}]: {p}" for p in schedule_problems(schedule))
    for index, trigger in enumerate(spec.on):
        try:
            check_filter(trigger, f"on[{index}]")
        except FilterError as exc:
            problems.append(str(exc))

    try:
        output = parse_template(spec.output)
        for ref in refs(output):
            if ref.root == "item":
                problems.append("output: $.item is only valid in a mapped node")
            if ref.node is not None and ref.node not in seen:
                problems.append(
                    f"output: refers to unknown node {ref.node!r}{_suggest(ref.node, ids)}"
                )
    except ExpressionError as exc:
        problems.append(f"output: {exc}")
        output = parse_template(None)

    order, cycle = _topological(compiled)
    if cycle:
        problems.append("cycle: " + " -> ".join(cycle))
    if problems:
        raise SpecError(spec.name, problems)
    dependents: dict[str, list[str]] = {n: [] for n in compiled}
    for node_id in order:
        for dep in compiled[node_id].deps:
            dependents[dep].append(node_id)
    validator = (
        jsonschema.Draft202012Validator(spec.input_schema)
        if spec.input_schema is not None
        else None
    )
    return CompiledSpec(
        spec,
        compiled,
        tuple(order),
        output,
        {k: tuple(v) for k, v in dependents.items()},
        validator,
    )


def schedule_problems(schedule: Schedule) -> list[str]:
    problems = []
    try:
        zoneinfo.ZoneInfo(schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(
            f"unknown time zone {schedule.timezone!r} (use an IANA name, e.g. 'Europe/Paris')"
        )
    if not croniter.croniter.is_valid(schedule.cron):
        problems.append(
            f"cron expression {schedule.cron!r} is not valid (5 fields: minute hour day month "
            "weekday, or 6 with seconds)"
        )
    return problems


def _topological(nodes: Mapping[str, CompiledNode]) -> tuple[list[str], list[str]]:
    """Kahn's order over `nodes`, and one cycle (as a path) if there is one."""
    indegree = {n: len(c.deps) for n, c in nodes.items()}
    users: dict[str, list[str]] = {n: [] for n in nodes}
    for node_id, node in nodes.items():
        for dep in node.deps:
            users[dep].append(node_id)
    ready = [n for n, d in indegree.items() if d == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for user in users[current]:
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    if len(order) == len(nodes):
        return order, []
    # Walk dependencies from any node left over until one repeats: that loop is a cycle.
    left = {n for n in nodes if n not in order}
    path: list[str] = []
    current = min(left)
    while current not in path:
        path.append(current)
        current = min(d for d in nodes[current].deps if d in left)
    cycle = [*path[path.index(current) :], current]
    return order, cycle


def _suggest(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _pydantic_problems(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    problems = []
    raw_nodes = data.get("nodes") if isinstance(data, Mapping) else None
    for err in exc.errors():
        loc = list(err["loc"])
        if loc == ["nodes"] and err["type"] == "too_short" and raw_nodes:
            continue  # pydantic's echo of a failed node (it drops it, then counts): not a problem
        where = ""
        if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
            node_id = None
            if isinstance(raw_nodes, list | tuple) and loc[1] < len(raw_nodes):
                raw = raw_nodes[loc[1]]
                node_id = raw.get("id") if isinstance(raw, Mapping) else None
            where = f"node {node_id!r}" if node_id else f"nodes[{loc[1]}]"
            loc = loc[2:]
        field_path = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            option = field_path.rsplit(".", 1)[-1]
            message = f"unknown option {option!r}"
            if "." in field_path:
                message += f" in {field_path.rsplit('.', 1)[0]!r}"
        else:
            message = f"{field_path}: {err['msg']}" if field_path else err["msg"]
        problems.append(f"{where}: {message}" if where else message)
    return problems
