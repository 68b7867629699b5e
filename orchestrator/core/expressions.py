"""Input expressions: JSON templates in which strings starting with `$.` are references.

    $.input                 the run's whole input object
    $.input.orders[0].id    a path into it
    $.nodes.extract         the output of node `extract` (a list, for a mapped node)
    $.nodes.train[2].loss   a path into a node's output
    $.item                  inside a mapped node: the element of the list it maps over

Any other JSON value is a literal; a literal string that must start with `$` is written
with `$$` (`"$$.5"` is the string `"$.5"`). Templates are parsed once, when a spec is
validated, and evaluated by the machine; an evaluation that fails (a missing key, an index
out of range) is an `ExpressionError` naming the expression and the step that failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(-?\d+)\]|\[\"([^\"]*)\"\]")
# Anchored with \Z: `$` also matches before a trailing "\n", which would end up in subjects.
NODE_ID_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]{0,63}"
NODE_ID = re.compile(rf"^{NODE_ID_PATTERN}\Z")

Path = tuple[str | int, ...]


class ExpressionError(ValueError):
    """An expression that cannot be parsed, or cannot be evaluated against the values it got."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference: `root` is "input", "item" or "nodes"; `node` names the node for "nodes"."""

    root: str
    node: str | None
    path: Path
    text: str


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class ListT:
    items: tuple[Template, ...]


@dataclass(frozen=True, slots=True)
class DictT:
    items: tuple[tuple[str, Template], ...]


Template = Ref | Literal | ListT | DictT


def parse_ref(text: str) -> Ref:
    if not text.startswith("$."):
        raise ExpressionError(f"expression {text!r} must start with '$.'")
    rest = text[1:]
    steps: list[str | int] = []
    pos = 0
    while pos < len(rest):
        match = _STEP.match(rest, pos)
        if not match:
            raise ExpressionError(
                f"expression {text!r}: cannot read {rest[pos:]!r} (expected .name, [index] "
                'or ["key"])'
            )
        name, index, quoted = match.groups()
        steps.append(name if name is not None else int(index) if index is not None else quoted)
        pos = match.end()
    root = steps[0]
    if root in ("input", "item"):
        return Ref(str(root), None, tuple(steps[1:]), text)
    if root == "nodes":
        if len(steps) < 2 or not isinstance(steps[1], str):
            raise ExpressionError(f"expression {text!r}: '$.nodes' must be followed by a node id")
        return Ref("nodes", steps[1], tuple(steps[2:]), text)
    raise ExpressionError(
        f"expression {text!r}: unknown root {root!r} (use $.input, $.nodes.<id> or $.item)"
    )


def parse_template(value: Any) -> Template:
    if isinstance(value, str):
        if value.startswith("$$"):
            return Literal(value[1:])
        if value.startswith("$."):
            return parse_ref(value)
        return Literal(value)
    # An all-literal list or dict is one Literal, built from the parsed items so that the
    # `$$` escapes inside it are undone too.
    if isinstance(value, list | tuple):
        parsed = tuple(parse_template(v) for v in value)
        if any(not isinstance(p, Literal) for p in parsed):
            return ListT(parsed)
        values = [p.value for p in parsed if isinstance(p, Literal)]
        return Literal(tuple(values) if isinstance(value, tuple) else values)
    if isinstance(value, dict):
        pairs = tuple((str(k), parse_template(v)) for k, v in value.items())
        if all(isinstance(p, Literal) for _, p in pairs):
            return Literal({k: p.value for k, p in pairs if isinstance(p, Literal)})
        return DictT(pairs)
    return Literal(value)


def refs(template: Template) -> Iterator[Ref]:
    if isinstance(template, Ref):
        yield template
    elif isinstance(template, ListT):
        for item in template.items:
            yield from refs(item)
    elif isinstance(template, DictT):
        for _, item in template.items:
            yield from refs(item)


@dataclass(frozen=True, slots=True)
class Scope:
    """What references resolve against. `output` returns a node's output (KeyError if none)."""

    input: Mapping[str, Any]
    output: Callable[[str], Any]
    item: Any = None


def evaluate(template: Template, scope: Scope) -> Any:
    if isinstance(template, Literal):
        return template.value
    if isinstance(template, ListT):
        return [evaluate(t, scope) for t in template.items]
    if isinstance(template, DictT):
        return {k: evaluate(t, scope) for k, t in template.items}
    if template.root == "input":
        value: Any = scope.input
    elif template.root == "item":
        value = scope.item
    else:
        assert template.node is not None
        value = scope.output(template.node)
    return walk(value, template.path, template.text)


def walk(value: Any, path: Path, text: str) -> Any:
    for depth, step in enumerate(path):
        where = f"{text}: at step {depth + 1} ({step!r})"
        if isinstance(step, int):
            if not isinstance(value, list):
                raise ExpressionError(f"{where}: expected a list, got {_kind(value)}")
            if not -len(value) <= step < len(value):
                raise ExpressionError(f"{where}: index out of range (length {len(value)})")
            value = value[step]
        else:
            if not isinstance(value, dict):
                raise ExpressionError(f"{where}: expected an object, got {_kind(value)}")
            if step not in value:
                keys = ", ".join(sorted(map(str, value))[:10]) or "none"
                raise ExpressionError(f"{where}: no key {step!r} (keys: {keys})")
            value = value[step]
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def render_ref(root: str, node: str | None, path: Path) -> str:
    text = f"$.{root}" if node is None else f"$.nodes.{node}"
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", step):
            text += f".{step}"
        else:
            text += f'["{step}"]'
    return text
