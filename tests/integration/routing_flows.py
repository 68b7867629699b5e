"""Workflows for the routing, heartbeat and crash-containment tests: tasks served by some
workers and not others, a task no worker serves, and a task that kills its worker process.

Tasks record each execution (`<task>:<worker>:<delivery>`) in $CONVEYOR_TEST_DIR/executions.log,
so a test can tell where and how often each one really ran.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from orchestrator import workflow
from workers import current, task

BYSTANDERS = 3


def _dir() -> Path:
    return Path(os.environ.get("CONVEYOR_TEST_DIR", "/tmp"))


def _record(name: str) -> None:
    context = current()
    with open(_dir() / "executions.log", "a") as log:
        log.write(f"{name}:{context.worker}:{context.delivery}\n")


# ---- two pools that share one task ----------------------------------------------------------


@task
def only_a(x: int) -> int:
    _record("only_a")
    return x + 1


@task
def only_b(x: int) -> int:
    _record("only_b")
    return x * 2


@task
def shared(x: int) -> int:
    _record("shared")
    return x - 3


@workflow
def overlapping(x: int = 1) -> list[int]:
    return [only_a(x), only_b(x), shared(x)]


POOL_A = [only_a, shared]
POOL_B = [only_b, shared]


# ---- a task nobody serves (no worker is ever given it) ------------------------------------------


@task(queue="nobody")
def orphan(x: int) -> int:
    return x


@task(queue="nobody", schedule_to_start=1, retries=1, backoff=0.2)
def impatient(x: int) -> int:
    return x


@task(schedule_to_start=30)
def prompt(x: int) -> int:
    return x


@workflow
def waits_for_a_worker(x: int = 1) -> int:
    return orphan(x)


@workflow
def gives_up_waiting(x: int = 1) -> int:
    return impatient(x)


@workflow
def starts_in_time(x: int = 1) -> int:
    return prompt(x)


# ---- a crasher among bystanders, in one worker process ------------------------------------------


@task
def bystander(n: int) -> int:
    """Well-behaved, slow enough to be in flight when the crasher takes the process down."""
    _record(f"bystander{n}")
    (_dir() / f"bystander{n}.started").touch()
    time.sleep(10 if current().delivery == 1 else 1)
    return n


@task
def crasher(x: int) -> int:
    """Kills its process on every delivery; on the first, once every bystander runs next to it."""
    _record("crasher")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(list(_dir().glob("bystander*.started"))) >= BYSTANDERS:
            break
        time.sleep(0.05)
    os._exit(3)


@workflow
def busy(n: int) -> int:
    return bystander(n)


@workflow
def crashes(x: int = 0) -> int:
    return crasher(x)


# ---- what a suspect keeps when it runs in a child process ---------------------------------------


@task(timeout=2)
def chatty(x: int) -> int:
    """Prints, logs, and answers with the pid of the process it ran in; sleeps past its timeout
    when `x` is negative."""
    context = current()
    print(f"printed on delivery {context.delivery} by {context.worker}")
    logging.getLogger("chatty").warning("logged in pid %s", os.getpid())
    if x < 0:
        time.sleep(60)
    return os.getpid()


@workflow
def talks(x: int = 1) -> int:
    return chatty(x)
