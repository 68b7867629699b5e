"""Reading a workflow spec from raw data (a YAML/JSON document, an API body, what `@workflow`
traced): pydantic builds the models of `core/spec.py`, and each of its errors becomes a problem
that names its place (`node 'train': unknown option 'retires'`).

When pydantic refuses part of the data, the parts it accepted are still read, so that the
compiler's checks run on them too and one SpecError lists every problem, not only pydantic's.
What pydantic refused cannot be checked further, and is left out as follows:
- a refused node: no node check runs on it; its id, when it is a string, still counts, both
  as a node that exists (a reference to it is not "unknown") and in the id checks. A cycle
  through it cannot be seen, since its edges were not read;
- a refused top-level field (a `name` that is not a string, a `schedules` list with one bad
  entry) takes its default, and `refused` names it so that its check is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from orchestrator.core.spec import NodeSpec, WorkflowSpec


@dataclass(frozen=True, slots=True)
class Reading:
    name: str  # as written: the name a SpecError carries
    spec: WorkflowSpec | None  # None: nothing could be read, `problems` says why
    problems: list[str]  # pydantic's, each with its place
    ids: list[str]  # every node id as written, in order, refused nodes included
    refused: frozenset[str] = frozenset()  # top-level fields pydantic refused


def read_spec(data: object) -> Reading:
    if isinstance(data, WorkflowSpec):
        return Reading(data.name, data, [], [n.id for n in data.nodes])
    if not isinstance(data, Mapping):
        problem = f"a workflow spec is an object, got {type(data).__name__}"
        return Reading("<unnamed>", None, [problem], [])
    name = str(data.get("name", "<unnamed>"))
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        return _read_accepted(data, name, exc)
    return Reading(name, spec, [], [n.id for n in spec.nodes])


# `nodes` needs at least one node: the top-level fields are read around this stand-in, which the
# accepted nodes then replace. Its name stands in for a refused one (whose check is skipped).
_STAND_IN: dict[str, Any] = {"name": "_", "nodes": [{"id": "_", "task": "_"}]}


def _read_accepted(data: Mapping[str, Any], name: str, exc: ValidationError) -> Reading:
    problems = _pydantic_problems(exc, data)
    refused = frozenset(
        str(err["loc"][0]) for err in exc.errors() if err["loc"] and err["loc"][0] != "nodes"
    )
    fields = WorkflowSpec.model_fields
    accepted = {k: v for k, v in data.items() if k in fields and k not in refused | {"nodes"}}
    try:
        top = WorkflowSpec.model_validate({**_STAND_IN, **accepted})
    except ValidationError:  # each field was accepted once already: not expected
        return Reading(name, None, problems, [])
    raw_nodes = data.get("nodes")
    raw_nodes = list(raw_nodes) if isinstance(raw_nodes, list | tuple) else []
    nodes = tuple(n for n in map(_accepted_node, raw_nodes) if n is not None)
    ids = [
        raw["id"]
        for raw in raw_nodes
        if isinstance(raw, Mapping) and isinstance(raw.get("id"), str)
    ]
    return Reading(name, top.model_copy(update={"nodes": nodes}), problems, ids, refused)


def _accepted_node(raw: object) -> NodeSpec | None:
    try:
        return NodeSpec.model_validate(raw)
    except ValidationError:
        return None  # its problems are among pydantic's already


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
