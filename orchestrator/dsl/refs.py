"""The symbolic values a `@workflow` body handles while it is traced: `Ref` (the run's input, a
node's output, or a path into either) and `Cond` (a comparison on one, for `when()`), and how
any value the body passes on becomes JSON in the spec (`to_template`).

A `Ref` stands for a value that does not exist yet, so Python control flow on it (`if`, `for`,
`len`, arithmetic, f-strings) raises `WorkflowDefinitionError` saying what to use instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from orchestrator.core.expressions import Path, render_ref
from orchestrator.errors import WorkflowDefinitionError


class Ref:
    """A symbolic value: the run's input, a node's output, or a path into either."""

    __slots__ = ("_node", "_path", "_root")
    __hash__ = object.__hash__
    _root: str
    _node: str | None
    _path: Path

    def __init__(self, root: str, node: str | None, path: Path = ()) -> None:
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_path", path)

    @property
    def expression(self) -> str:
        return render_ref(self._root, self._node, self._path)

    def __repr__(self) -> str:
        return f"<Ref {self.expression}>"

    def __getitem__(self, key: str | int) -> Ref:
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise WorkflowDefinitionError(
                f"{self.expression}[{key!r}]: only string keys and integer indexes can be used"
            )
        return Ref(self._root, self._node, (*self._path, key))

    def __getattr__(self, name: str) -> Ref:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise WorkflowDefinitionError(f"{self.expression} is read-only while tracing a workflow")

    # Conditions, for when(): comparisons build them instead of comparing.
    def __eq__(self, other: object) -> Cond:  # type: ignore[override]
        return Cond(self, "eq", other)

    def __ne__(self, other: object) -> Cond:  # type: ignore[override]
        return Cond(self, "ne", other)

    def __gt__(self, other: Any) -> Cond:
        return Cond(self, "gt", other)

    def __ge__(self, other: Any) -> Cond:
        return Cond(self, "ge", other)

    def __lt__(self, other: Any) -> Cond:
        return Cond(self, "lt", other)

    def __le__(self, other: Any) -> Cond:
        return Cond(self, "le", other)

    def is_in(self, values: list[Any]) -> Cond:
        return Cond(self, "in", values)

    # Python control flow cannot work on values that do not exist yet: say what to use instead.
    def __bool__(self) -> bool:
        raise WorkflowDefinitionError(
            f"`if`/`and`/`or`/`not` on {self.expression}: its value is not known while the "
            "workflow is defined. Guard tasks with `with when(ref > x):` (or `when(ref)`), or "
            "decide inside a task."
        )

    def __iter__(self) -> Iterator[Any]:
        raise WorkflowDefinitionError(
            f"iterating over {self.expression}: its length is not known while the workflow is "
            "defined. Fan out with `some_task.map(ref)`; the next task receives the list."
        )

    def __len__(self) -> int:
        raise WorkflowDefinitionError(
            f"len({self.expression}): not known while the workflow is defined; compute it in a task"
        )

    def __contains__(self, item: Any) -> bool:
        raise WorkflowDefinitionError(
            f"`in` on {self.expression}: use `when(ref.is_in([...]))` or decide inside a task"
        )

    def __format__(self, spec: str = "") -> str:
        raise WorkflowDefinitionError(
            f"formatting {self.expression} into a string: its value is not known while the "
            "workflow is defined; build strings inside a task"
        )

    __str__ = __format__

    def _arith(self, *_: Any) -> Any:
        raise WorkflowDefinitionError(
            f"arithmetic on {self.expression}: its value is not known while the workflow is "
            "defined; compute inside a task"
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _arith
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = _arith


class Cond:
    """`ref <op> operand`, evaluated by the machine when the guarded nodes become ready."""

    __slots__ = ("op", "operand", "ref")

    def __init__(self, ref: Ref, op: str, operand: Any) -> None:
        self.ref, self.op, self.operand = ref, op, operand

    def __bool__(self) -> bool:
        raise WorkflowDefinitionError(
            f"a comparison on {self.ref.expression} was used as a Python bool; use "
            "`with when(...):` to guard tasks instead"
        )

    def spec(self) -> dict[str, Any]:
        if isinstance(self.operand, Ref):
            raise WorkflowDefinitionError(
                f"when(): {self.ref.expression} can only be compared with a literal value, not "
                f"with {self.operand.expression}; compare the two inside a task"
            )
        operand = jsonable(self.operand, f"the operand compared with {self.ref.expression}")
        return {"value": self.ref.expression, "op": self.op, "operand": operand}


def to_template(value: Any, what: str) -> Any:
    """`value` as a spec template: references become expressions, the rest JSON literals.
    `what` says where the value was given, for the error."""
    if isinstance(value, Ref):
        return value.expression
    if isinstance(value, Cond):
        raise WorkflowDefinitionError(f"{what}: a comparison can only be used in when()")
    if isinstance(value, list | tuple):
        return [to_template(v, what) for v in value]
    if isinstance(value, dict):
        return {str(k): to_template(v, what) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("$"):
        return "$" + value  # escape: a literal, not an expression
    return jsonable(value, what)


def jsonable(value: Any, what: str) -> Any:
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise WorkflowDefinitionError(
            f"{what}: {value!r} is not JSON-serialisable ({exc})"
        ) from None
