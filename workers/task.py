"""`@task`: declare a function (sync or async) as a task a worker can serve.

    @task(retries=3, timeout=60, queue="gpu")
    def train(lr: float, data: list[float]) -> Model: ...

Inputs are validated from the function's type hints and outputs serialised the same way
(pydantic). Called inside a `@workflow` body the task records a node; called anywhere else it
is the plain function, so it can be unit-tested as one. Nothing global is registered: a
`Worker` is given its tasks (or a module to find them in).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

import pydantic
from pydantic_core import to_jsonable_python

from events.ids import is_token
from events.tasks import TaskDeclaration, current_tracer
from workers.errors import TaskDefinitionError

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    def __init__(
        self, fn: Callable[P, R], declaration: TaskDeclaration, *, inline: bool = False
    ) -> None:
        self.fn = fn
        self.declaration = declaration
        self.is_async = inspect.iscoroutinefunction(fn)
        if inline and self.is_async:
            raise TaskDefinitionError(
                f"task {declaration.name!r}: inline=True is for plain (sync) functions; an "
                "async one always runs on the worker's event loop"
            )
        # A worker-side choice, not part of the spec: the sync function is called on the
        # worker's event loop instead of a thread (workers.attempt.Executor).
        self.inline = inline
        self._input_model = _input_model(fn, declaration.name)
        hints = _hints(fn)
        returns = hints.get("return", inspect.Signature.empty)
        self._output_adapter: pydantic.TypeAdapter[Any] | None = (
            None if returns in (inspect.Signature.empty, Any) else pydantic.TypeAdapter(returns)
        )

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def queue(self) -> str:
        return self.declaration.queue

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = current_tracer()
        if tracer is not None:
            return tracer.call(self.declaration, args, kwargs)  # type: ignore[no-any-return]
        return self.fn(*args, **kwargs)

    def map(self, items: Any, *, max_parallel: int | None = None, **kwargs: Any) -> Any:
        """Fan out over `items` (inside a workflow), at most `max_parallel` at a time; outside
        one, call the function per item."""
        tracer = current_tracer()
        if tracer is not None:
            return tracer.map(self.declaration, items, (), kwargs, max_parallel)
        # The same binding as in a workflow: items go to the first parameter not given by keyword.
        free = [p for p in self.declaration.params if p not in kwargs]
        if not free:
            raise TypeError(f"{self.name}.map(): no parameter left to map the items over")
        fn: Any = self.fn  # called by keyword: ParamSpec cannot express "this one by name"
        return [fn(**{free[0]: item}, **kwargs) for item in items]

    def with_options(self, **options: Any) -> Task[P, R]:
        """A copy with other defaults (retries, timeout, backoff, queue, inline, ...)."""
        queue = options.pop("queue", self.declaration.queue)
        inline = bool(options.pop("inline", self.inline))
        defaults = {**self.declaration.defaults, **options}
        declaration = dataclasses.replace(self.declaration, queue=queue, defaults=defaults)
        return Task(self.fn, declaration, inline=inline)

    # ---- used by the worker runtime ----------------------------------------------------
    def validate_input(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Raise pydantic.ValidationError when `raw` does not fit the parameters' hints."""
        model = self._input_model.model_validate(raw)
        return {name: getattr(model, name) for name in self.declaration.params}

    def serialise_output(self, value: Any) -> Any:
        if self._output_adapter is not None:
            return self._output_adapter.dump_python(value, mode="json")
        return to_jsonable_python(value)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        import typing

        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to no validation
        return {}


def _input_model(fn: Callable[..., Any], name: str) -> type[pydantic.BaseModel]:
    hints = _hints(fn)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TaskDefinitionError(
                f"task {name!r}: *{param.name} / **{param.name} cannot be bound from a task's "
                "input object; name each parameter"
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    safe = "".join(c if c.isalnum() else "_" for c in name)
    return pydantic.create_model(
        f"{safe}_input",
        __config__=pydantic.ConfigDict(arbitrary_types_allowed=True, extra="forbid"),
        **fields,
    )


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int | None = None,
    timeout: float | None = None,
    backoff: float | None = None,
    backoff_max: float | None = None,
    non_retryable: Sequence[type[BaseException] | str] | None = None,
    schedule_to_start: float | None = None,
    external: bool = False,
    concurrency: int | Mapping[str, Any] | None = None,
    rate_limit: str | Mapping[str, Any] | None = None,
    inline: bool = False,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int | None = None,
    timeout: float | None = None,
    backoff: float | None = None,
    backoff_max: float | None = None,
    non_retryable: Sequence[type[BaseException] | str] | None = None,
    schedule_to_start: float | None = None,
    external: bool = False,
    concurrency: int | Mapping[str, Any] | None = None,
    rate_limit: str | Mapping[str, Any] | None = None,
    inline: bool = False,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Declare a task. `retries` extra attempts after the first, `timeout` seconds per attempt,
    `backoff` initial retry delay (doubling, capped by `backoff_max`), `non_retryable` exception
    types that fail at once, `schedule_to_start` seconds an attempt may wait for a worker to
    start it before it fails (ScheduleToStartTimeout, retryable). `external=True` declares a
    task served by a worker elsewhere (e.g. in another language): workflows call it, Python
    workers never serve it. The name (the function's by default) is a NATS subject token:
    letters, digits, '_' and '-'.

    Flow control (checked when a workflow using the task is defined): `concurrency` attempts
    at most running at once across every run (`5`, or `{"limit": 1, "key": "$.input.account"}`
    per value of an argument); `rate_limit` attempts at most started per period (`"10/s"`, or
    `{"limit": 100, "per": "1m", "key": "$.input.api_key"}`). Attempts over a limit wait.

    `inline=True` (plain functions only) runs the function on the worker's event loop instead
    of handing it to a thread: for short, CPU-light functions that never block (no I/O, no
    sleep), it saves the hand-off (about a quarter of a no-op task's worker CPU). While it
    runs, nothing else in the worker does (no other task, no heartbeat), and its `timeout`
    cannot interrupt it: an attempt that returns after its timeout fails with TimeoutError
    then."""

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        if not callable(f):
            raise TaskDefinitionError(f"@task needs a function, got {f!r}")
        task_name = name or f.__name__
        if not is_token(task_name):
            raise TaskDefinitionError(
                f"task name {task_name!r} must hold only ASCII letters, digits, '_' or '-' (at "
                "most 128): tasks are dispatched on a NATS subject named after them"
            )
        params = inspect.signature(f).parameters.values()
        defaults = {
            "retries": retries,
            "timeout": timeout,
            "backoff": backoff,
            "backoff_max": backoff_max,
            "non_retryable": tuple(n if isinstance(n, str) else n.__name__ for n in non_retryable)
            if non_retryable
            else None,
            "schedule_to_start": schedule_to_start,
            "concurrency": dict(concurrency) if isinstance(concurrency, Mapping) else concurrency,
            "rate_limit": dict(rate_limit) if isinstance(rate_limit, Mapping) else rate_limit,
        }
        declaration = TaskDeclaration(
            name=task_name,
            queue=queue,
            params=tuple(p.name for p in params),
            required=tuple(
                p.name
                for p in params
                if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ),
            defaults={k: v for k, v in defaults.items() if v is not None},
            external=external,
        )
        return Task(f, declaration, inline=inline)

    if fn is not None:
        return decorate(fn)
    return decorate
