"""A sync task handed to a thread is awaited for a moment with the loop blocked
(`workers.attempt.SHORT_WAIT_S`) before the loop goes back to its other work: the outcomes are
those of the ordinary await — output, the task's own error, its timeout — whether the task ends
within that moment or not, and a task that overran it is awaited the ordinary way next time."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from events.models import TaskDispatched
from workers import current, task
from workers.attempt import SHORT_WAIT_S, Executor, Result, perform
from workers.context import TaskContext
from workers.task import Task


@task
def quick(x: int) -> dict[str, Any]:
    return {"thread": threading.get_ident(), "node": current().node_id, "x": x + 1}


@task
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def refuses(x: int) -> int:
    raise KeyError(f"no {x}")


async def attempt(
    executor: Executor, the_task: Task[Any, Any], raw: dict[str, Any], timeout: float | None = None
) -> Result:
    dispatched = TaskDispatched(
        run_id="r1", node_id="n", attempt=1, task=the_task.name, queue="q", timeout=timeout
    )
    context = TaskContext("r1", "n", 1, the_task.name, "w1", 1)
    return await perform(the_task, dispatched, raw, executor, context)


async def test_a_quick_task_ends_on_its_thread_with_its_context() -> None:
    executor = Executor(2)
    try:
        result = await attempt(executor, quick, {"x": 1})
    finally:
        executor.shutdown()
    assert result.error is None
    assert result.output["thread"] != threading.get_ident()
    assert (result.output["node"], result.output["x"]) == ("n", 2)


async def test_a_task_that_outlasts_the_wait_is_awaited_and_its_timeout_holds() -> None:
    executor = Executor(2)
    ticks = 0

    async def ticker() -> None:  # the loop keeps running while the slow task works
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    beat = asyncio.create_task(ticker())
    try:
        done = await attempt(executor, slow, {"seconds": 0.1})
        late = await attempt(executor, slow, {"seconds": 0.3}, timeout=0.05)
    finally:
        beat.cancel()
        executor.shutdown()
    assert (done.error, done.output) == (None, 0.1)
    assert ticks >= 5, "the loop was blocked while a slow task ran"
    assert late.error is not None and late.error.type == "TimeoutError"
    assert SHORT_WAIT_S < 0.05


async def test_a_quick_failure_is_the_tasks_own_error() -> None:
    executor = Executor(2)
    try:
        failed = await attempt(executor, refuses, {"x": 3})
    finally:
        executor.shutdown()
    assert failed.error is not None
    assert (failed.error.type, failed.error.message) == ("KeyError", "'no 3'")
