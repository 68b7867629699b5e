"""A deployment's runs followed by their outcome events, as a client awaits its results.

A core-NATS subscription on the run outcome subjects (`run.succeeded` / `failed` /
`cancelled`, whose data carry the run's output) tells when each run ended and with what: no
status polling while the clock runs, since a status request costs the orchestrator being
measured a store read and a reply. Runs are started with `Client.trigger`, as a user starts them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench.deploy import Deployment, EventTap, Outcome, Outcomes
from orchestrator.client import Client


class Followed:
    """A deployment with an outcome tap: `trigger_and_wait` follows runs by their events."""

    def __init__(self, deployment: Deployment) -> None:
        assert deployment.client is not None, "start the deployment first"
        self.deployment = deployment
        self.client: Client = deployment.client
        self.outcomes = Outcomes()
        self.tap = EventTap(self.client)
        self.tap.add(self.outcomes.handler)

    async def start(self) -> None:
        await self.tap.start(*Outcomes.PATTERNS)

    async def stop(self) -> None:
        await self.tap.stop()

    async def wait(self, run_id: str, timeout: float) -> Any:
        """The outcome, checking every second that Conveyor's processes are alive."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.outcomes.wait(run_id, min(1.0, timeout))
            except TimeoutError:
                self.deployment.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} did not end within {timeout}s") from None

    async def run(self, workflow: str, input: dict[str, Any], timeout: float) -> tuple[Any, float]:
        started = time.time()
        run_id = await self.client.trigger(workflow, input)
        outcome = await self.wait(run_id, timeout)
        if outcome.status != "succeeded":
            raise RuntimeError(f"{workflow} run {run_id} ended {outcome.status}: {outcome.data}")
        return outcome, started


@dataclass(frozen=True, slots=True)
class Batch:
    """`count` runs triggered at once: when the batch began, and each run's outcome."""

    began: float
    outcomes: list[Outcome]

    @property
    def wall_s(self) -> float:
        return max(o.arrived for o in self.outcomes) - self.began

    @property
    def latencies_s(self) -> list[float]:
        return [o.arrived - self.began for o in self.outcomes]


# At most this many `Client.trigger` calls in flight from the one client. Each call reads the
# workflow registry (KV gets: the latest version, and the spec until it is cached); 1,000 at
# once on a fresh client timed out in those reads on this loaded 2-core machine (nats: timeout,
# BusUnavailable), so larger batches are started 200 at a time — W3's size, which is unbounded.
MAX_TRIGGERS_IN_FLIGHT = 200


async def trigger_batch(
    followed: Followed, workflow: str, input: dict[str, Any], count: int, timeout: float
) -> Batch:
    """`count` runs of `workflow` started at once through `Client.trigger` (concurrently, as
    many callers would; at most MAX_TRIGGERS_IN_FLIGHT at a time), then every outcome
    awaited; a run that did not succeed raises."""
    slots = asyncio.Semaphore(MAX_TRIGGERS_IN_FLIGHT)

    async def trigger() -> str:
        async with slots:
            return await followed.client.trigger(workflow, input)

    began = time.time()
    run_ids = await asyncio.gather(*(trigger() for _ in range(count)))
    outcomes = [await followed.wait(run_id, timeout) for run_id in run_ids]
    failed = [o for o in outcomes if o.status != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} {workflow} runs did not succeed: {failed[0]}")
    return Batch(began, outcomes)
