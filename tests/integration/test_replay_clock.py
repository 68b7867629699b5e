"""A successor's replay decides what the owner decided, whatever its clock and its batches.

In lease mode a successor rebuilds a partition from a snapshot and the event stream's tail
through the same pure machine, while what the deposed owner decided may already have run (its
commands to workers are not fenced). Decisions that read the time — a rate limit's window,
priority aging, a debounce or batch window, a retry's backoff — must then come out the same on
replay, or a run whose task already ran can wait for ever (its task's result arrives for an
attempt the successor has not dispatched; its dispatch, when it comes, is deduplicated), a
limiter's timer id can collide with one the owner already used (deduplicated: the limiter never
wakes), and a limit can be exceeded. So every event is applied at its time in the stream
(JetStream's timestamp, the same for every reader), never at the applier's wall clock.

Here an owner applies a burst of rate-limited runs (every event in stream order, as in lease
mode) with an in-process worker; then a successor whose clock is an hour off replays the whole
partition from the stream's start (no snapshot) in its own batches, under a fence of its own, as
a takeover does. Both stores must hold the same runs, nodes, limiter and entries. Before events
carried their stream time, every decision the successor re-made was made at its own clock.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from events import EmbeddedServer, Topology
from events.bus import Bus
from events.fencing import Tenure, marker
from events.testing import eventually
from orchestrator.runtime.engine import Engine
from orchestrator.runtime.store import Store
from tests.integration import flow_flows as flows
from tests.integration.harness import Harness

RUNS = 30
SKEW_S = 3600.0  # the successor's clock, an hour ahead of everyone else's
COMPARED = ("flow_entities", "flow_entries", "runs", "nodes")  # the limiter first


def _contents(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as connection:
        return {t: sorted(connection.execute(f"SELECT * FROM {t}").fetchall()) for t in COMPARED}


async def _successor(url: str, topology: Topology, db: Path) -> tuple[Bus, Engine]:
    """An engine for partition 0 under epoch 2's fence, its consumer from the stream's start."""
    bus = await Bus.connect(url, topology, name="successor-p0")
    last_seq, _ = await bus.last_fence(0)
    fence_seq = await bus.publish_fence(0, last_seq, marker("successor", 2))
    assert fence_seq is not None
    starts = {topology.orchestrator_consumer(0): 1}
    bus.tenure = Tenure(0, 2, topology.fence_subject(0), fence_seq, starts)
    store = await Store.open(db)
    engine = Engine(bus, store, partition=0, clock=lambda: time.time() + SKEW_S, batch_size=7)
    await engine.start()
    return bus, engine


async def _catch_up(engine: Engine) -> None:
    """Step the engine until it has applied something, then until nothing more comes (what it
    publishes itself included)."""
    deadline = time.monotonic() + 60
    applied, idle = 0, 0
    while not applied or idle < 3:
        assert time.monotonic() < deadline, "the successor did not catch up within 60 s"
        fetched = await engine.step(max_wait=0.3)
        applied += fetched
        idle = 0 if fetched else idle + 1


async def test_a_successor_with_another_clock_replays_the_owners_decisions(
    nats_server: EmbeddedServer, topology: Topology, tmp_path: Path
) -> None:
    harness = await Harness(nats_server, topology, tmp_path).open()
    successor_bus: Bus | None = None
    try:
        await harness.register(flows.rated)
        owner = await harness.start_orchestrator()
        owner.applier.shortcut = False  # every event in stream order, as in lease mode
        await harness.start_worker([flows.call_api])
        runs = [await harness.client.trigger("rated", {"n": n}) for n in range(RUNS)]
        for run_id in runs:
            assert (await harness.client.wait(run_id, timeout=60))["status"] == "succeeded"

        async def drained() -> bool:
            return owner.outbox.pending_timers == 0 and not owner.outbox.backlog

        await eventually(drained, timeout=30, message="the owner's outbox to drain")
        await harness.stop_engine(owner)

        successor_bus, successor = await _successor(
            nats_server.url, topology, tmp_path / "successor.db"
        )
        await _catch_up(successor)
        await successor.drain()
        await successor.store.close()

        owner_state, replayed = _contents(harness.db), _contents(tmp_path / "successor.db")
        for table in COMPARED:
            differ = [
                (theirs, ours)
                for theirs, ours in zip(owner_state[table], replayed[table], strict=False)
                if theirs != ours
            ]
            assert replayed[table] == owner_state[table], f"the successor's {table}: {differ[:2]}"
        assert len(owner_state["runs"]) == RUNS
    finally:
        if successor_bus is not None:
            await successor_bus.close()
        await harness.close()
