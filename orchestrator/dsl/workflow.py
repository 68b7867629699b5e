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

The parts: `refs.py` (the symbolic values), `tracer.py` (task calls recorded as nodes),
`nodes.py` (`when`, `sleep`, `wait_for_event`, `subworkflow`); this module turns a function
into a spec.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import pydantic

from events.tasks import TaskDeclaration, tracing
from orchestrator.core.admission import admit_version
from orchestrator.core.spec import WorkflowSpec
from orchestrator.dsl.refs import Ref, to_template
from orchestrator.dsl.tracer import WorkflowTracer
from orchestrator.errors import SpecError, WorkflowDefinitionError

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
    input_schema, params = _parameters(fn, name)
    tracer = WorkflowTracer(name)
    with tracing(tracer):
        try:
            result = fn(**params)
        except WorkflowDefinitionError as exc:
            raise WorkflowDefinitionError(f"workflow {name!r}: {exc}") from None
        output = to_template(result, f"the return value of workflow {name!r}")
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
        spec = admit_version(raw).spec
    except SpecError as exc:
        raise WorkflowDefinitionError(str(exc)) from None
    _check_trigger_inputs(spec, params)
    return spec, tracer.tasks


def _check_trigger_inputs(spec: WorkflowSpec, params: Mapping[str, Ref]) -> None:
    """The input each trigger will give the function must fit its parameters: a run started by
    an event gets `{"event": ...}`, a scheduled one its schedule's `input`. Checked here, where
    the parameters are known, rather than failing every triggered run."""
    if spec.on and "event" not in params:
        raise WorkflowDefinitionError(
            f"workflow {spec.name!r} is started by events (on=...) but has no `event` "
            f"parameter: add one to receive the triggering CloudEvent as JSON "
            f"(def {spec.name}(event: dict): ...)"
        )


def _parameters(fn: Callable[..., Any], name: str) -> tuple[dict[str, Any], dict[str, Ref]]:
    """The JSON schema of the run input the function's parameters take, and a reference to
    each parameter (`$.input.<name>`) to trace the function with."""
    signature = inspect.signature(fn)
    # Resolved hints, so that `from __future__ import annotations` (string annotations naming
    # the module's own models) works; Annotated metadata (constraints) is kept.
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable: fall back to the raw annotations
        hints = {}
    fields: dict[str, Any] = {}
    params: dict[str, Ref] = {}
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
        params[param.name] = Ref("input", None, (param.name,))
    try:
        # extra="forbid": the schema says `additionalProperties: false`, so an input key that
        # names no parameter is refused (a typo must not run silently with the defaults).
        model = pydantic.create_model(
            f"{name}_input", __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
        input_schema = model.model_json_schema()
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise WorkflowDefinitionError(
            f"workflow {name!r}: its parameters' type hints cannot be turned into a JSON "
            f"schema: {exc}"
        ) from None
    input_schema.pop("title", None)
    return input_schema, params
