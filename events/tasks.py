"""How a task is declared, as both sides of the wire see it, and the hook the DSL traces through.

A task's *declaration* (name, queue, parameter names, default options) is part of the contract:
the orchestrator puts it in workflow specs, workers serve it. It lives here so that
`orchestrator` and `workers` never import each other.

While `@workflow` traces a function, a `Tracer` is installed in a context variable; calling a
task then records a node instead of running the function. Nothing global changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class TaskDeclaration:
    name: str
    queue: str = "default"
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()  # parameters without a default
    # Served by a worker elsewhere (another language, another team): declared here only so
    # workflows can call it; a Python Worker given this declaration never serves it.
    external: bool = False
    # Node options (retries, timeout, backoff...) a spec node inherits unless it overrides them.
    defaults: Mapping[str, Any] = field(default_factory=dict)


class Tracer(Protocol):
    def call(self, task: TaskDeclaration, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def map(
        self,
        task: TaskDeclaration,
        items: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        max_parallel: int | None = None,
    ) -> Any: ...


_current: ContextVar[Tracer | None] = ContextVar("conveyor_tracer", default=None)


def current_tracer() -> Tracer | None:
    return _current.get()


@contextlib.contextmanager
def tracing(tracer: Tracer) -> Iterator[Tracer]:
    token = _current.set(tracer)
    try:
        yield tracer
    finally:
        _current.reset(token)
