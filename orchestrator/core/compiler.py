"""A workflow spec compiled for the machine: validated fully, expressions parsed, nodes in
topological order. `compile_spec` either returns a `CompiledSpec` or raises `SpecError` listing
every problem with its place (`node 'train': ...`); nothing is registered on error.

`core/reading.py` reads the data into the spec models (pydantic); then `_Compilation` runs its
named `_check_*` steps in order, each on what was read, so that one error lists every problem.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import croniter
import jsonschema

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
from orchestrator.core.reading import Reading, read_spec
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
    # What the node does, decided once here (the machine asks on every event).
    kind: str = field(init=False, default="task")

    def __post_init__(self) -> None:
        spec = self.spec
        kind = (
            "sleep"
            if spec.sleep is not None
            else "wait_for"
            if spec.wait_for is not None
            else "workflow"
            if spec.workflow is not None
            else "task"
        )
        object.__setattr__(self, "kind", kind)


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
    return compile_spec(data).spec


def compile_spec(data: WorkflowSpec | Mapping[str, Any]) -> CompiledSpec:
    """Validate `data` fully and compile it, or raise SpecError listing every problem found.

    Pydantic reads the data first; then the named `_check_*` steps of `_Compilation` run in
    order, each adding what it finds to one list of problems: no step stops the others."""
    compilation = _Compilation(read_spec(data))
    compilation.run()
    return compilation.result()


# ---- the checks ------------------------------------------------------------------------------


@dataclass(slots=True)
class _NodeDraft:
    """A node while its steps run: the templates parsed so far and the references they hold."""

    spec: NodeSpec
    inputs: dict[str, Template] = field(default_factory=dict)
    when: Template | None = None
    over: Template | None = None
    until: Template | None = None
    match: dict[str, Template] = field(default_factory=dict)
    refs: list[tuple[str, Ref]] = field(default_factory=list)  # (place, reference)
    deps: frozenset[str] = frozenset()

    @property
    def where(self) -> str:
        return f"node {self.spec.id!r}"

    def compiled(self) -> CompiledNode:
        return CompiledNode(
            self.spec, self.inputs, self.when, self.over, self.deps, self.until, self.match
        )


class _Compilation:
    """One compilation: the spec, the problems found so far and the nodes compiled so far.

    `run` calls the steps in order: the spec-wide ones, then for each node the node steps, then
    the ones that need every node compiled. The order is the order problems are listed in."""

    def __init__(self, reading: Reading) -> None:
        self.name = reading.name
        self.spec = reading.spec
        self.problems = list(reading.problems)
        self.ids = reading.ids
        self.known = set(reading.ids)  # a reference to one of these is not "unknown"
        self.refused = reading.refused
        # The nodes pydantic accepted: the only ones compiled, so the only edges of the graph.
        self.read = {n.id for n in self.spec.nodes} if self.spec is not None else set()
        self.nodes: dict[str, CompiledNode] = {}
        self.output: Template = parse_template(None)
        self.order: list[str] = []

    def run(self) -> None:
        spec = self.spec
        if spec is None:
            return
        for spec_step in (self._check_name, self._check_input_schema, self._check_node_ids):
            spec_step(spec)
        for node in spec.nodes:
            draft = _NodeDraft(node)
            for node_step in (
                self._check_queue,
                self._check_task_name,
                self._check_node_kind,
                self._check_sleep,
                self._check_wait,
                self._check_inputs,
                self._check_condition,
                self._check_map,
                self._check_item_refs,
                self._check_dependencies,
            ):
                node_step(draft)
            self.nodes[node.id] = draft.compiled()
        for spec_step in (
            self._check_schedules,
            self._check_triggers,
            self._check_output,
            self._check_cycles,
        ):
            spec_step(spec)

    def result(self) -> CompiledSpec:
        if self.problems or self.spec is None:
            raise SpecError(self.name, self.problems)
        spec = self.spec
        dependents: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node_id in self.order:
            for dep in self.nodes[node_id].deps:
                dependents[dep].append(node_id)
        validator = (
            jsonschema.Draft202012Validator(spec.input_schema)
            if spec.input_schema is not None
            else None
        )
        return CompiledSpec(
            spec,
            self.nodes,
            tuple(self.order),
            self.output,
            {k: tuple(v) for k, v in dependents.items()},
            validator,
        )

    def _parse(self, draft: _NodeDraft, value: Any, place: str) -> Template | None:
        try:
            template = parse_template(value)
        except ExpressionError as exc:
            self.problems.append(f"{draft.where}: {place}: {exc}")
            return None
        draft.refs.extend((place, r) for r in refs(template))
        return template

    # -- the spec as a whole

    def _check_name(self, spec: WorkflowSpec) -> None:
        if "name" not in self.refused and not WORKFLOW_NAME.match(spec.name):
            self.problems.append(
                f"name {spec.name!r} must start with a letter and hold only letters, digits, "
                "'_' or '-'"
            )

    def _check_input_schema(self, spec: WorkflowSpec) -> None:
        if spec.input_schema is None:
            return
        try:
            jsonschema.Draft202012Validator.check_schema(spec.input_schema)
        except jsonschema.SchemaError as exc:
            self.problems.append(f"input_schema is not a valid JSON Schema: {exc.message}")

    def _check_node_ids(self, spec: WorkflowSpec) -> None:
        seen: set[str] = set()
        for node_id in self.ids:
            if node_id in seen:
                self.problems.append(f"node {node_id!r}: duplicate id (node ids must be unique)")
            seen.add(node_id)
            if not NODE_ID.match(node_id):
                self.problems.append(
                    f"node {node_id!r}: id must start with a letter or '_' and hold only "
                    "letters, digits, '_' or '-' (at most 64)"
                )

    # -- each node

    def _check_queue(self, draft: _NodeDraft) -> None:
        queue = draft.spec.queue
        if not is_token(queue):
            self.problems.append(
                f"{draft.where}: queue {queue!r} must hold only letters, digits, '_', '-'"
            )

    def _check_task_name(self, draft: _NodeDraft) -> None:
        # A task is dispatched on its own subject, `<ns>.task.<queue>.<task>`: one token.
        task = draft.spec.task
        if task is not None and not is_token(task):
            self.problems.append(
                f"{draft.where}: task name {task!r} must hold only letters, digits, '_' or '-' "
                "(at most 128): it is a NATS subject token"
            )

    def _check_node_kind(self, draft: _NodeDraft) -> None:
        node = draft.spec
        kinds = [k for k in NODE_KINDS if getattr(node, k) is not None]
        if len(kinds) != 1:
            self.problems.append(
                f"{draft.where}: give exactly one of task, sleep, wait_for or workflow "
                f"(got {', '.join(kinds) or 'none'})"
            )
        if node.map is not None and node.task is None:
            self.problems.append(f"{draft.where}: only a task node can be mapped")
        if node.timeout_s is not None and node.task is None:
            self.problems.append(
                f"{draft.where}: timeout_s applies to task nodes (a wait has its own)"
            )
        if node.schedule_to_start_s is not None and node.task is None:
            self.problems.append(f"{draft.where}: schedule_to_start_s applies to task nodes")

    def _check_sleep(self, draft: _NodeDraft) -> None:
        sleep = draft.spec.sleep
        if sleep is None:
            return
        if (sleep.seconds is None) == (sleep.until is None):
            self.problems.append(f"{draft.where}: sleep needs exactly one of seconds or until")
        if sleep.until is not None:
            draft.until = self._parse(draft, sleep.until, "sleep.until")
        if not _is_seconds(sleep.seconds):
            self.problems.append(
                f"{draft.where}: sleep.seconds must be a number >= 0 or an expression, "
                f"got {sleep.seconds!r}"
            )
        elif sleep.seconds is not None:
            draft.until = self._parse(draft, sleep.seconds, "sleep.seconds")

    def _check_wait(self, draft: _NodeDraft) -> None:
        wait = draft.spec.wait_for
        if wait is None:
            return
        for attr, value in wait.match.items():
            parsed = self._parse(draft, value, f"wait_for.match.{attr}")
            if parsed is not None:
                draft.match[attr] = parsed

    def _check_inputs(self, draft: _NodeDraft) -> None:
        for key, value in draft.spec.inputs.items():
            parsed = self._parse(draft, value, f"input {key!r}")
            if parsed is not None:
                draft.inputs[key] = parsed

    def _check_condition(self, draft: _NodeDraft) -> None:
        if draft.spec.when is not None:
            draft.when = self._parse(draft, draft.spec.when.value, "when")

    def _check_map(self, draft: _NodeDraft) -> None:
        mapping = draft.spec.map
        if mapping is None:
            return
        draft.over = self._parse(draft, mapping.over, "map.over")
        if mapping.param in draft.spec.inputs:
            self.problems.append(
                f"{draft.where}: map.param {mapping.param!r} is also given in inputs; the "
                "mapped element is bound to it"
            )

    def _check_item_refs(self, draft: _NodeDraft) -> None:
        mapped = draft.spec.map is not None
        for place, ref in draft.refs:
            if ref.root != "item":
                continue
            if not mapped:
                self.problems.append(
                    f"{draft.where}: {place}: {ref.text!r} is only valid in a mapped node"
                )
            if place == "map.over":
                self.problems.append(f"{draft.where}: map.over cannot use $.item")
            if place == "when" and mapped:
                # A condition is decided once for the whole node, before there is any item.
                self.problems.append(
                    f"{draft.where}: when cannot use $.item (the condition is decided once for "
                    "the whole mapped node; filter the list in an upstream task instead)"
                )

    def _check_dependencies(self, draft: _NodeDraft) -> None:
        node_id = draft.spec.id
        deps = set(draft.spec.depends_on)
        deps.update(ref.node for _, ref in draft.refs if ref.node is not None)
        for dep in sorted(deps):
            if dep not in self.known:
                self.problems.append(
                    f"{draft.where}: refers to unknown node {dep!r}{_suggest(dep, self.ids)}"
                )
            elif dep == node_id:
                self.problems.append(f"{draft.where}: refers to itself")
        draft.deps = frozenset(d for d in deps if d in self.read and d != node_id)

    # -- what needs every node

    def _check_schedules(self, spec: WorkflowSpec) -> None:
        for index, schedule in enumerate(spec.schedules):
            self.problems.extend(f"schedules[{index}]: {p}" for p in schedule_problems(schedule))

    def _check_triggers(self, spec: WorkflowSpec) -> None:
        for index, trigger in enumerate(spec.on):
            try:
                check_filter(trigger, f"on[{index}]")
            except FilterError as exc:
                self.problems.append(str(exc))

    def _check_output(self, spec: WorkflowSpec) -> None:
        try:
            self.output = parse_template(spec.output)
        except ExpressionError as exc:
            self.problems.append(f"output: {exc}")
            return
        for ref in refs(self.output):
            if ref.root == "item":
                self.problems.append("output: $.item is only valid in a mapped node")
            if ref.node is not None and ref.node not in self.known:
                self.problems.append(
                    f"output: refers to unknown node {ref.node!r}{_suggest(ref.node, self.ids)}"
                )

    def _check_cycles(self, spec: WorkflowSpec) -> None:
        self.order, cycle = _topological(self.nodes)
        if cycle:
            self.problems.append("cycle: " + " -> ".join(cycle))


def _is_seconds(value: Any) -> bool:
    """A sleep's `seconds` as written: absent, a number >= 0, or an expression giving one."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value >= 0  # the machine's rule: NaN is refused here rather than at run time
    return value is None or (isinstance(value, str) and value.startswith("$."))


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
