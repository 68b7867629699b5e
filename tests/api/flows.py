"""Workflows the API and dashboard tests run: layered DAGs with a mapped node, a failure, a
long-running task to cancel, and input schemas with defaults for the trigger form."""

from __future__ import annotations

import asyncio
import logging

from orchestrator import sleep, workflow
from workers import NonRetryableError, task

log = logging.getLogger("tests.flows")

# A test that needs to see a run midway holds `fetch` (or `enrich`) with an event here and sets
# it to let the node finish. The worker runs in-process on the test's event loop, so an
# asyncio.Event works.
GATES: dict[str, asyncio.Event] = {}


@task
async def fetch(rows: int) -> list[int]:
    gate = GATES.get("fetch")
    if gate is not None:
        await gate.wait()
    # WARNING: passes the root logger's default level, so it is captured without configuration.
    log.warning("fetched %d rows", rows)
    return list(range(rows))


@task
async def enrich(x: int, factor: int) -> int:
    gate = GATES.get("enrich")
    if gate is not None:
        await gate.wait()
    return x * factor


@task
def audit(rows: list[int]) -> int:
    return len(rows)


@task
def summarise(values: list[int], audited: int) -> dict[str, int]:
    return {"count": len(values), "total": sum(values), "audited": audited}


@task
def publish(summary: dict[str, int], channel: str) -> str:
    return f"{channel}: {summary['total']}"


@workflow
def report(rows: int = 5, factor: int = 3, channel: str = "ops") -> str:
    """Fetch rows, enrich each in parallel, audit them, summarise and publish."""
    data = fetch(rows)
    enriched = enrich.map(data, factor=factor)
    audited = audit(data)
    summary = summarise(enriched, audited)
    return publish(summary, channel)


@task(retries=2, backoff=0.05)
def explode(reason: str) -> None:
    raise NonRetryableError(f"cannot continue: {reason}")


@workflow
def broken(reason: str = "bad data") -> None:
    """Fails at once with a non-retryable error (for retry and error display)."""
    explode(reason)


@task
async def wait_for(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@workflow
def slow(seconds: float = 120.0) -> float:
    """Blocks for `seconds` (for cancellation)."""
    return wait_for(seconds)


@task
def check(x: int) -> int:
    if x % 3 == 0:
        raise NonRetryableError(f"{x} is a multiple of three")
    return x


@workflow
def picky(rows: int = 10) -> list[int]:
    """A mapped node some of whose children fail."""
    return check.map(fetch(rows))


@workflow(
    schedule={"cron": "0 3 * * *", "timezone": "Europe/Paris", "input": {"rows": 2}},
    on="com.example.data.arrived",
    notify={"url": "https://ops:pw@hooks.example.com/conveyor?token=abc", "secret": "s3cr3t"},
)
def nightly(event: dict[str, object] | None = None, rows: int = 1) -> dict[str, object]:
    """Scheduled, event-triggered, with a signed outbound webhook, and a durable sleep."""
    return {"nap": sleep(30), "rows": fetch(rows)}


CHAIN_LENGTH = 120


@task
def step(x: int) -> int:
    return x + 1


@workflow
def long_chain(start: int = 0) -> int:
    """120 tasks one after the other (for the graph's layout: wrapped, fitted, searchable)."""
    value = start
    for _ in range(CHAIN_LENGTH):
        value = step(value)
    return value


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@workflow
def big_output(n: int = 20_000) -> list[int]:
    """An output too large to show whole (for the run page's truncation and download)."""
    return numbers(n)


TASKS = [fetch, enrich, audit, summarise, publish, explode, wait_for, check, step, numbers]
WORKFLOWS = [report, broken, slow, picky, nightly]  # long_chain, big_output: by their tests


@workflow(concurrency=1)
def one_at_a_time(seconds: float = 120.0) -> float:
    """Flow control: one run at a time (registered by the flow tests only)."""
    return wait_for(seconds)


@workflow(on="com.example.reading", debounce={"period": 60, "key": "$.subject"})
def settle_readings(event: dict[str, object], count: int) -> float:
    """Flow control: one run a minute after a sensor's last reading (the flow tests only)."""
    return wait_for(0.01)
