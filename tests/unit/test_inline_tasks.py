"""`@task(inline=True)`: a plain function called on the worker's event loop instead of a thread,
with the same outcomes as a threaded attempt (output, typed error, TimeoutError, `current()`).
`perform` is the worker's real attempt path; it needs no bus."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from events.models import TaskDispatched
from workers import current, task
from workers.attempt import Executor, Result, perform
from workers.context import TaskContext
from workers.errors import TaskDefinitionError
from workers.task import Task


@task(inline=True)
def where_inline(x: int) -> dict[str, object]:
    return {"thread": threading.get_ident(), "node": current().node_id, "x": x + 1}


@task
def where_threaded(x: int) -> dict[str, object]:
    return {"thread": threading.get_ident(), "node": current().node_id, "x": x + 1}


@task(inline=True, timeout=0.05)
def overruns(seconds: float) -> float:
    time.sleep(seconds)  # what an inline task must not do: here, to overrun its timeout
    return seconds


@task(inline=True)
def fails(x: int) -> int:
    raise ValueError(f"no {x}")


async def attempt(
    the_task: Task[Any, Any], raw_input: dict[str, Any], timeout: float | None = None
) -> Result:
    name = the_task.name
    dispatched = TaskDispatched(
        run_id="r1", node_id=f"{name}_node", attempt=1, task=name, queue="default", timeout=timeout
    )
    context = TaskContext("r1", dispatched.node_id, 1, name, "w1", 1)
    executor = Executor(4)
    try:
        return await perform(the_task, dispatched, raw_input, executor, context)
    finally:
        executor.shutdown()


async def test_an_inline_task_runs_on_the_loop_and_a_plain_one_on_a_thread() -> None:
    loop_thread = threading.get_ident()
    inline = await attempt(where_inline, {"x": 1})
    threaded = await attempt(where_threaded, {"x": 1})
    assert inline.error is None and threaded.error is None
    assert inline.output == {"thread": loop_thread, "node": "where_inline_node", "x": 2}
    assert threaded.output["thread"] != loop_thread
    assert threaded.output["node"] == "where_threaded_node"


async def test_an_inline_task_that_returns_after_its_timeout_fails_with_timeout_error() -> None:
    late = await attempt(overruns, {"seconds": 0.12}, timeout=0.05)
    assert late.error is not None
    assert (late.error.type, late.error.retryable) == ("TimeoutError", True)
    assert "0.05s timeout" in late.error.message
    in_time = await attempt(overruns, {"seconds": 0.0}, timeout=0.05)
    assert (in_time.error, in_time.output) == (None, 0.0)


async def test_an_inline_tasks_own_error_is_reported_typed() -> None:
    failed = await attempt(fails, {"x": 3})
    assert failed.error is not None
    assert (failed.error.type, failed.error.message) == ("ValueError", "no 3")


def test_inline_is_refused_for_an_async_function() -> None:
    with pytest.raises(TaskDefinitionError, match="inline=True is for plain"):

        @task(inline=True)
        async def already_on_the_loop() -> None: ...


def test_inline_stays_off_the_spec_and_with_options_can_set_it() -> None:
    assert where_inline.inline and not where_threaded.inline
    assert "inline" not in where_inline.declaration.defaults
    assert where_threaded.with_options(inline=True).inline
    retried = where_inline.with_options(retries=2)
    assert retried.inline and retried.declaration.defaults["retries"] == 2
    assert "inline" not in retried.declaration.defaults
