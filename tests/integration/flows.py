"""Workflows and tasks the integration tests run (in-process, or in `conveyor worker` processes).

Tasks that must behave differently per attempt or delivery read `workers.current()`; tasks that
coordinate with a test use files under $CONVEYOR_TEST_DIR (a per-test temp dir), because a test
and a worker process share nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from orchestrator import when, workflow
from workers import NonRetryableError, current, task

CHAIN_LENGTH = 50
FAN_OUT = 1_000


def _dir() -> Path:
    return Path(os.environ.get("CONVEYOR_TEST_DIR", "/tmp"))


def _record(name: str) -> None:
    """Append one line per execution, so a test can count how often a node really ran."""
    with open(_dir() / "executions.log", "a") as log:
        log.write(f"{name}\n")


@task
def inc(x: int) -> int:
    return x + 1


@workflow
def chain(start: int = 0) -> int:
    value = start
    for _ in range(CHAIN_LENGTH):
        value = inc(value)
    return value


@task
async def square(x: int) -> int:
    return x * x


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def make_range(n: int) -> list[int]:
    return list(range(n))


@workflow
def fan_out(n: int = FAN_OUT) -> dict[str, int]:
    numbers = make_range(n)
    squares = square.map(numbers)
    return {"count": n, "sum": total(squares)}


@task(retries=3, backoff=0.05)
def flaky(succeed_on: int) -> dict[str, int]:
    attempt = current().attempt
    if attempt < succeed_on:
        raise ConnectionError(f"transient failure on attempt {attempt}")
    return {"attempt": attempt}


@workflow
def retry_then_succeed(succeed_on: int = 3) -> dict[str, int]:
    return flaky(succeed_on)


@task(retries=5, backoff=0.05)
def reject(payload: dict[str, str]) -> None:
    raise NonRetryableError(f"payload {payload} is not acceptable")


@workflow
def non_retryable(payload: dict[str, str]) -> None:
    reject(payload)


@task(retries=2, timeout=0.5, backoff=0.05)
async def slow_first(label: str) -> str:
    if current().attempt == 1:
        await asyncio.sleep(30)  # past the timeout: the attempt is cut off and retried
    return f"{label} done on attempt {current().attempt}"


@workflow
def timeout_then_succeed(label: str = "x") -> str:
    return slow_first(label)


@task
async def block(seconds: float) -> float:
    (_dir() / "block.started").touch()
    await asyncio.sleep(seconds)
    return seconds


@workflow
def long_running(seconds: float = 60.0) -> float:
    first = block(seconds)
    return inc_after(first)


@task
def inc_after(x: float) -> float:
    return x + 1


@task
def step(name: str, after: str | None = None) -> str:
    _record(name)
    gate = _dir() / f"{name}.gate"
    if gate.exists() or (_dir() / f"{name}.wait").exists():
        (_dir() / f"{name}.started").touch()
        deadline = time.monotonic() + 60
        while (_dir() / f"{name}.wait").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return name


@workflow
def three_steps() -> list[str]:
    a = step("a")
    b = step("b", after=a)
    c = step("c", after=b)
    return [a, b, c]


@task
def die_first_time(x: int) -> int:
    """Blocks on its first delivery (the test kills the worker then); returns on the next."""
    _record(f"die_first_time:{current().delivery}")
    if current().delivery == 1:
        (_dir() / "victim.started").touch()
        time.sleep(120)
    return x * 10


@workflow
def survive_worker_crash(x: int = 4) -> int:
    return die_first_time(x)


@task
def poison(x: int) -> int:
    _record("poison")
    os.kill(os.getpid(), signal.SIGKILL)
    return x


@workflow
def kills_its_worker(x: int = 1) -> int:
    return poison(x)


@task
def score(x: float) -> float:
    return x


@task
def celebrate(value: float) -> str:
    return f"celebrated {value}"


@workflow
def guarded(x: float = 1.0) -> dict[str, object]:
    s = score(x)
    with when(s > 0.5):
        result = celebrate(s)
    return {"score": s, "celebration": result}


@task
def blob(n: int) -> str:
    return "x" * n


@task
def measure(text: str) -> int:
    return len(text)


@workflow
def big_payloads(n: int = 300_000) -> dict[str, int]:
    """Over the inline limit both ways: blob's output and measure's input go by claim check."""
    return {"length": measure(blob(n))}


@workflow
def measure_given(text: str) -> int:
    """A run input over the inline limit: the first attempt's input goes by claim check."""
    return measure(text)
