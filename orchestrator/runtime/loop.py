"""The event loop every Conveyor process runs on: uvloop where it is installed (a dependency on
Linux and macOS), the standard asyncio loop otherwise or when `CONVEYOR_EVENT_LOOP=asyncio`
(or `event_loop = "asyncio"` in conveyor.toml: events.config's one settings model).

uvloop's transports and scheduling cost less per message than asyncio's (measured on the
JetStream floor: +10-30% with the same client code, DESIGN §11), and nothing in Conveyor depends
on which loop runs it — the tests run in-process components on asyncio's loop and the CLI's
processes on uvloop, so both stay covered.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from events.config import environment

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if environment().get("CONVEYOR_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` picks; Ctrl-C cancels `main` (it can say
    what it was doing) and then raises KeyboardInterrupt, as asyncio.run does."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_interruptible(main))


async def _interruptible(main: Coroutine[Any, Any, T]) -> T:
    """Runner's own SIGINT handler is a Python-level `signal.signal` handler, which uvloop ran
    late or never when the signal came while it sat in epoll (seen: `run --wait` ignoring
    Ctrl-C under load); the loop's own signal handling wakes it through its self-pipe."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, interrupt)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        return await main
    try:
        return await main
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
