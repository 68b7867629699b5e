"""The Python DSL: `@workflow` traces a function once, with symbolic values, into a WorkflowSpec.

    @workflow
    def pipeline(rows: int = 100, candidates: list[float] = [0.1, 0.3]):
        data = extract(rows)                       # a task call returns a reference
        models = train.map(candidates, data=data)  # one child per candidate (fan-out)
        best = pick_best(models)                   # receives the list of outputs (fan-in)
        with when(best["score"] > 0.8):            # guarded nodes are skipped otherwise
            publish(best)
        return {"best": best, "rows": rows}

The function's parameters are bound by name from the run's input object and validated (by the
orchestrator, before any task runs) from their type hints. Python control flow on a reference
(`if`, `for`, `len`, arithmetic, f-strings) raises `WorkflowDefinitionError` saying what to use
instead: the values are not known until the run happens.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

import pydantic
from pydantic_core import PydanticSerializationError, to_jsonable_python

from events.tasks import TaskDeclaration, current_tracer, tracing
from orchestrator.core.compiler import validate_spec
from orchestrator.core.expressions import Path, render_ref
from orchestrator.core.spec import WorkflowSpec
from orchestrator.errors import SpecError, WorkflowDefinitionError

_OPTION_FIELDS = {
    "retries": None,
    "timeout": "timeout_s",
    "backoff": "backoff_s",
    "backoff_max": "backoff_max_s",
    "backoff_multiplier": "backoff_multiplier",
    "jitter": "jitter",
    "non_retryable": "non_retryable",
}


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
        operand = _jsonable(self.operand, f"the operand compared with {self.ref.expression}")
        return {"value": self.ref.expression, "op": self.op, "operand": operand}


class _Tracer:
    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.nodes: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        self.guards: list[dict[str, Any]] = []
        self.tasks: dict[str, TaskDeclaration] = {}

    def call(self, task: TaskDeclaration, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ref:
        return self._node(task, self._bind(task, args, kwargs), None)

    def map(
        self, task: TaskDeclaration, items: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Ref:
        if args:
            raise WorkflowDefinitionError(
                f"{task.name}.map(items, ...): pass the other arguments by keyword"
            )
        free = [p for p in task.params if p not in kwargs]
        if not free:
            raise WorkflowDefinitionError(
                f"{task.name}.map(): every parameter is given by keyword, so there is none left "
                "to map the items over"
            )
        inputs = self._bind(task, (), {**kwargs, free[0]: None})
        del inputs[free[0]]
        over = self._template(items, f"the items of {task.name}.map()")
        return self._node(task, inputs, {"over": over, "param": free[0]})

    def _bind(
        self, task: TaskDeclaration, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if len(args) > len(task.params):
            raise WorkflowDefinitionError(
                f"task {task.name!r} takes {len(task.params)} arguments, {len(args)} were given"
            )
        bound = dict(zip(task.params, args, strict=False))
        for name, value in kwargs.items():
            if name not in task.params:
                raise WorkflowDefinitionError(
                    f"task {task.name!r} has no parameter {name!r} "
                    f"(it has: {', '.join(task.params)})"
                )
            if name in bound:
                raise WorkflowDefinitionError(f"task {task.name!r}: {name!r} given twice")
            bound[name] = value
        missing = [p for p in task.required if p not in bound]
        if missing:
            raise WorkflowDefinitionError(
                f"task {task.name!r} is missing argument(s): {', '.join(missing)}"
            )
        return {k: self._template(v, f"argument {k!r} of {task.name!r}") for k, v in bound.items()}

    def _node(
        self, task: TaskDeclaration, inputs: dict[str, Any], mapping: dict[str, Any] | None
    ) -> Ref:
        node_id = self.new_id(task.name)
        self.tasks[task.name] = task
        node: dict[str, Any] = {
            "id": node_id,
            "task": task.name,
            "queue": task.queue,
            "inputs": inputs,
        }
        node.update(_options(task, node_id))
        if mapping is not None:
            node["map"] = mapping
        return self.add(node)

    def new_id(self, name: str, wanted: str | None = None) -> str:
        if wanted is not None:
            if wanted in self.ids:
                raise WorkflowDefinitionError(f"node id {wanted!r} is used twice")
            self.ids.add(wanted)
            return wanted
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name)
        if not re.match(r"[A-Za-z_]", base):
            base = f"_{base}"
        node_id, n = base, 1
        while node_id in self.ids:
            n += 1
            node_id = f"{base}_{n}"
        self.ids.add(node_id)
        return node_id

    def add(self, node: dict[str, Any]) -> Ref:
        if self.guards:
            node["when"] = self.guards[-1]
        self.nodes.append(node)
        return Ref("nodes", node["id"])

    def _template(self, value: Any, what: str) -> Any:
        if isinstance(value, Ref):
            return value.expression
        if isinstance(value, Cond):
            raise WorkflowDefinitionError(f"{what}: a comparison can only be used in when()")
        if isinstance(value, list | tuple):
            return [self._template(v, what) for v in value]
        if isinstance(value, dict):
            return {str(k): self._template(v, what) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("$"):
            return "$" + value  # escape: a literal, not an expression
        return _jsonable(value, what)


def _options(task: TaskDeclaration, node_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    for option, value in task.defaults.items():
        if option not in _OPTION_FIELDS:
            raise WorkflowDefinitionError(
                f"node {node_id!r}: unknown task option {option!r} "
                f"(known: {', '.join(sorted(_OPTION_FIELDS))})"
            )
        if value is None:
            continue
        if option == "retries":
            retry["max_attempts"] = int(value) + 1
        elif option == "timeout":
            out["timeout_s"] = value
        elif option == "non_retryable":
            retry["non_retryable"] = [v if isinstance(v, str) else v.__name__ for v in value]
        else:
            retry[_OPTION_FIELDS[option]] = value  # type: ignore[index]
    if retry:
        out["retry"] = retry
    return out


def _jsonable(value: Any, what: str) -> Any:
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise WorkflowDefinitionError(
            f"{what}: {value!r} is not JSON-serialisable ({exc})"
        ) from None


@contextlib.contextmanager
def when(condition: Ref | Cond) -> Iterator[None]:
    """Guard the task calls inside the block: they run only if `condition` holds at run time."""
    tracer = current_tracer()
    if not isinstance(tracer, _Tracer):
        raise WorkflowDefinitionError("when() can only be used inside a @workflow function")
    if isinstance(condition, Ref):
        guard = {"value": condition.expression, "op": "truthy"}
    elif isinstance(condition, Cond):
        guard = condition.spec()
    else:
        raise WorkflowDefinitionError(
            f"when() takes a task output or a comparison on one, not {type(condition).__name__}"
        )
    if tracer.guards:
        raise WorkflowDefinitionError(
            "nested when() blocks are not supported: compute the combined condition in a task"
        )
    tracer.guards.append(guard)
    try:
        yield
    finally:
        tracer.guards.pop()


def _tracer(what: str) -> _Tracer:
    tracer = current_tracer()
    if not isinstance(tracer, _Tracer):
        raise WorkflowDefinitionError(f"{what}() can only be used inside a @workflow function")
    return tracer


def sleep(seconds: Any = None, *, until: Any = None, id: str | None = None) -> Ref:
    """A durable sleep node: done `seconds` after it becomes ready, or at the instant `until`
    (RFC 3339 text, or a task's output giving one). Survives orchestrator restarts."""
    tracer = _tracer("sleep")
    if (seconds is None) == (until is None):
        raise WorkflowDefinitionError("sleep() takes exactly one of seconds or until=")
    spec = (
        {"seconds": tracer._template(seconds, "sleep(seconds)")}
        if seconds is not None
        else {"until": tracer._template(until, "sleep(until=...)")}
    )
    return tracer.add({"id": tracer.new_id("sleep", id), "sleep": spec})


_NO_DEFAULT = object()


def wait_for_event(
    type: str,
    *,
    match: Mapping[str, Any] | None = None,
    timeout: float | None = None,  # a number (not an expression): part of the spec
    default: Any = _NO_DEFAULT,
    id: str | None = None,
) -> Ref:
    """A node that waits for a CloudEvent of `type` published on the ingest subjects whose
    attributes equal `match` (e.g. `{"subject": order_id}`); its output is the event. After
    `timeout` seconds it fails with WaitTimeout — or, given a `default`, succeeds with it."""
    tracer = _tracer("wait_for_event")
    spec: dict[str, Any] = {
        "type": type,
        "match": {
            k: tracer._template(v, f"wait_for_event match {k!r}") for k, v in (match or {}).items()
        },
        "timeout_s": timeout,
    }
    if default is not _NO_DEFAULT:
        spec["on_timeout"] = "default"
        spec["default"] = tracer._template(default, "wait_for_event default")
    return tracer.add(
        {"id": tracer.new_id(f"wait_{type.rsplit('.', 1)[-1]}", id), "wait_for": spec}
    )


def subworkflow(
    child: Workflow | str,
    *,
    version: int | None = None,
    id: str | None = None,
    retries: int | None = None,
    **inputs: Any,
) -> Ref:
    """Run another registered workflow as one node of this one; its output is the child's."""
    tracer = _tracer("subworkflow")
    name = child.name if isinstance(child, Workflow) else child
    node: dict[str, Any] = {
        "id": tracer.new_id(name, id),
        "workflow": {"name": name, "version": version},
        "inputs": {k: tracer._template(v, f"input {k!r} of {name!r}") for k, v in inputs.items()},
    }
    if retries is not None:
        node["retry"] = {"max_attempts": retries + 1}
    return tracer.add(node)


ScheduleLike = str | Mapping[str, Any]
FilterLike = str | Mapping[str, Any]


def _schedules(schedule: ScheduleLike | Sequence[ScheduleLike] | None) -> list[dict[str, Any]]:
    if schedule is None:
        return []
    items = [schedule] if isinstance(schedule, str | Mapping) else list(schedule)
    return [{"cron": s} if isinstance(s, str) else dict(s) for s in items]


def _filters(on: FilterLike | Sequence[FilterLike] | None) -> list[dict[str, Any]]:
    """`on="com.shop.order.created"` is shorthand for an exact match on the event type."""
    if on is None:
        return []
    items = [on] if isinstance(on, str | Mapping) else list(on)
    return [{"exact": {"type": f}} if isinstance(f, str) else dict(f) for f in items]


class Workflow:
    """A traced workflow: its spec, and the tasks it uses (for `conveyor worker` to serve)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None,
        description: str | None,
        schedules: list[dict[str, Any]] | None = None,
        on: list[dict[str, Any]] | None = None,
        notify: list[dict[str, Any]] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description if description is not None else inspect.getdoc(fn) or ""
        self.schedules = schedules or []
        self.on = on or []
        self.notify = notify or []
        self._traced: tuple[WorkflowSpec, dict[str, TaskDeclaration]] | None = None

    # Traced on first use, not at decoration: a module may define its tasks below its workflows.
    @property
    def spec(self) -> WorkflowSpec:
        return self._trace()[0]

    @property
    def tasks(self) -> dict[str, TaskDeclaration]:
        return self._trace()[1]

    def _trace(self) -> tuple[WorkflowSpec, dict[str, TaskDeclaration]]:
        if self._traced is None:
            self._traced = _trace(
                self.fn, self.name, self.description, self.schedules, self.on, self.notify
            )
        return self._traced

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise WorkflowDefinitionError(
            f"workflow {self.name!r} is not called directly: trigger it with `conveyor run "
            f"{self.name}` or publish an io.conveyor.run.requested event"
        )

    def __repr__(self) -> str:
        return f"<Workflow {self.name}>"


@overload
def workflow(fn: Callable[..., Any], /) -> Workflow: ...


@overload
def workflow(
    *,
    name: str | None = None,
    description: str | None = None,
    schedule: ScheduleLike | Sequence[ScheduleLike] | None = None,
    on: FilterLike | Sequence[FilterLike] | None = None,
    notify: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | None = None,
) -> Callable[[Callable[..., Any]], Workflow]: ...


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schedule: ScheduleLike | Sequence[ScheduleLike] | None = None,
    on: FilterLike | Sequence[FilterLike] | None = None,
    notify: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | None = None,
) -> Workflow | Callable[[Callable[..., Any]], Workflow]:
    """Turn a function into a workflow by tracing it once (see the module docstring).

    `schedule`: cron expressions (`"*/5 * * * *"`), or objects with `cron`, `timezone`,
    `input`, `catchup`. `on`: CloudEvents filters (or event types) that start a run; the
    function then takes an `event` parameter (the triggering event as JSON)."""
    if fn is not None:
        return Workflow(fn, name, description)
    hooks = (
        [] if notify is None else [notify] if isinstance(notify, str | Mapping) else list(notify)
    )
    return lambda f: Workflow(
        f,
        name,
        description,
        _schedules(schedule),
        _filters(on),
        [{"url": n} if isinstance(n, str) else dict(n) for n in hooks],
    )


def _trace(
    fn: Callable[..., Any],
    name: str,
    description: str,
    schedules: list[dict[str, Any]],
    on: list[dict[str, Any]],
    notify: list[dict[str, Any]],
) -> tuple[WorkflowSpec, dict[str, TaskDeclaration]]:
    if inspect.iscoroutinefunction(fn):
        raise WorkflowDefinitionError(
            f"workflow {name!r}: a workflow function must be a plain `def` (its tasks may be async)"
        )
    signature = inspect.signature(fn)
    # Resolved hints, so that `from __future__ import annotations` (string annotations naming
    # the module's own models) works; Annotated metadata (constraints) is kept.
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable: fall back to the raw annotations
        hints = {}
    fields: dict[str, Any] = {}
    refs: dict[str, Ref] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise WorkflowDefinitionError(
                f"workflow {name!r}: parameter {param.name!r} must be a plain named parameter "
                "(they are bound by name from the run's input object)"
            )
        annotation = hints.get(
            param.name, Any if param.annotation is inspect.Parameter.empty else param.annotation
        )
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
        refs[param.name] = Ref("input", None, (param.name,))
    try:
        model = pydantic.create_model(f"{name}_input", **fields)
        input_schema = model.model_json_schema()
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise WorkflowDefinitionError(
            f"workflow {name!r}: its parameters' type hints cannot be turned into a JSON "
            f"schema: {exc}"
        ) from None
    input_schema.pop("title", None)

    tracer = _Tracer(name)
    with tracing(tracer):
        try:
            result = fn(**refs)
        except WorkflowDefinitionError as exc:
            raise WorkflowDefinitionError(f"workflow {name!r}: {exc}") from None
        output = tracer._template(result, f"the return value of workflow {name!r}")
    if not tracer.nodes:
        raise WorkflowDefinitionError(f"workflow {name!r} calls no task")
    raw: Mapping[str, Any] = {
        "name": name,
        "description": description,
        "input_schema": input_schema,
        "nodes": tracer.nodes,
        "output": output,
        "schedules": schedules,
        "on": on,
        "notify": notify,
    }
    try:
        spec = validate_spec(raw)
    except SpecError as exc:
        raise WorkflowDefinitionError(str(exc)) from None
    return spec, tracer.tasks
