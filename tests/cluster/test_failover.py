"""Lease mode on a real 3-node cluster: orchestrator replicas that fail over, fence stale owners
out and share the partitions (docs/failover.md).

Real `conveyor orchestrator --lease` processes (lease 2 s, a snapshot a second), real workers,
P = 4. Every run must finish exactly once — one `run.succeeded` per run in the stream, one
CloudEvent id — with the right output, each task run as its first attempt (at least once: a
dispatch published again by a successor may run twice). Takeover times are printed, not
asserted: the benchmark measures them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
from collections import Counter
from pathlib import Path

import nats.errors

from events.bus import Bus
from events.envelope import CloudEvent
from events.errors import BusError
from events.testing import eventually
from orchestrator.client import Client
from tests.cluster.conftest import FLOWS, Deployment
from tests.cluster.flows import STEPS
from tests.cluster.replicas import (
    SNAPSHOT_S,
    Replicas,
    fence_of,
    outbox_rows,
    owners,
    seed_partition,
    serving,
    stop_when,
    uploads_in_progress,
)
from tests.cluster.test_cluster import _registered, _retrying

PARTITIONS = 4
RUNS = 500
RETENTION_S = 8.0
BIG = 0  # the partition seeded with finished runs: its snapshots take long enough to catch


def _partitioned(deployment: Deployment) -> None:
    deployment.topology = dataclasses.replace(deployment.topology, partitions=PARTITIONS)


async def _trigger(client: Client, count: int, prefix: str) -> list[str]:
    async def one(index: int) -> str:
        key = f"{prefix}-{index}"
        return await _retrying(lambda: client.trigger("relay", {}, idempotency_key=key))

    run_ids: list[str] = []
    for start in range(0, count, 50):
        run_ids += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))
    return run_ids


async def _finished_once(client: Client, deployment: Deployment, run_ids: list[str]) -> None:
    """Every run succeeded with the right output, its tasks each ran once, and the stream holds
    exactly one run.succeeded per run."""
    for run_id in run_ids:
        try:
            final = await _retrying(lambda r=run_id: client.wait(r, timeout=120))
        except TimeoutError:
            raise AssertionError(
                f"run {run_id} did not finish: {await _status_for_message(client, run_id)}\n"
                f"{deployment.logs()}"
            ) from None
        assert final["status"] == "succeeded" and final["output"] == STEPS, final
        assert {n["attempts"] for n in final["nodes"].values()} == {1}, final
    per_run = await _outcomes_per_run(client.bus)
    missing = [r for r in run_ids if r not in per_run]
    assert not missing, f"no run.succeeded in the stream for {missing}\n{deployment.logs()}"
    assert {per_run[r] for r in run_ids} == {1}, "a run.succeeded stored twice"
    # Tasks: each ran, and only as the first attempt (no retry, no new attempt). A dispatch a
    # successor published again may run twice — at least once, never a second attempt: a
    # work-queue stream forgets the ids of messages already consumed when its leader changes.
    lines = [line.split() for line in (deployment.workdir / "tasks.log").read_text().splitlines()]
    wanted = set(run_ids)
    executions = Counter((run, node) for run, node, *_ in lines if run in wanted)
    assert len(executions) == len(run_ids) * STEPS
    assert {attempt for run, _, attempt, *_ in lines if run in wanted} == {"1"}
    again = sum(count - 1 for count in executions.values())
    print(f"task executions beyond the first (same attempt, at least once): {again}")


async def _status_for_message(client: Client, run_id: str) -> object:
    """The run's status for a failure message, or why it cannot be had (an unserved partition
    is part of what the message must show, not a reason to lose it)."""
    try:
        return await client.status(run_id)
    except BusError as exc:
        return f"no status: {exc}"


async def _outcomes_per_run(bus: Bus) -> dict[str, int]:
    """Run id -> how many run.succeeded messages the event stream holds for it (each run's
    outcome has a subject of its own: the stream counts them per subject)."""
    topo = bus.topology
    wanted = f"{topo.namespace}.evt.*.run.succeeded.*"
    info = await _retrying(lambda: bus.js.stream_info(topo.events_stream, subjects_filter=wanted))
    return {s.rsplit(".", 1)[1]: n for s, n in (info.state.subjects or {}).items()}


async def _fenced_by(bus: Bus, partitions: list[int], replica: str) -> dict[int, int] | None:
    """Each partition's last fence marker's sequence, once every one of them is `replica`'s."""
    fences = {p: await bus.last_fence(p) for p in partitions}
    if all(json.loads(body or b"{}").get("replica") == replica for _, body in fences.values()):
        return {p: seq for p, (seq, _) in fences.items()}
    return None


async def _serving(bus: Bus, expected: dict[str, int], deployment: Deployment) -> float:
    await eventually(
        lambda: serving(bus, expected),
        timeout=90,
        interval=0.1,
        message=f"partitions held as {expected}\n{deployment.logs()}",
    )
    return time.time()


async def test_replicas_fail_over_and_rebalance_while_runs_flow(deployment: Deployment) -> None:
    _partitioned(deployment)
    assert deployment.run("topology", "apply").returncode == 0
    bus = await deployment.bus()
    client = await Client.connect(deployment.cluster.url, deployment.topology)
    try:
        await seed_partition(bus, deployment.workdir, BIG, runs=20_000)
        replicas = Replicas(deployment)
        replicas.start("r1")
        replicas.start("r2")
        for _ in range(2):
            deployment.spawn("worker", FLOWS)
        await eventually(lambda: _registered(bus), timeout=60, message="workers ready")
        await _serving(bus, {"r1": 2, "r2": 2}, deployment)
        run_ids = await _trigger(client, RUNS, "load")
        # ...and more all along, so that every partition keeps changing (and snapshotting)
        flowing: list[str] = []
        trickle = asyncio.create_task(_trickle(client, flowing))

        # kill -9 a replica while its outbox holds committed rows not yet known as published
        assert await stop_when(replicas.procs["r1"], _has_outbox(replicas, "r1"))
        killed = replicas.kill("r1")
        print(f"\nr1 killed -9 mid-flush; r2 holds all {PARTITIONS} after", end=" ")
        print(f"{await _serving(bus, {'r2': 4}, deployment) - killed:.2f} s")

        # a replica joins: r2 hands two partitions over, each after a snapshot
        replicas.start("r3")
        await _serving(bus, {"r2": 2, "r3": 2}, deployment)

        # kill -9 the owner of the big partition mid-upload, and the leases' leader with it
        victim = (await owners(bus))[BIG]
        assert victim is not None
        survivor = "r3" if victim == "r2" else "r2"
        caught: set[str] = set()
        assert await stop_when(replicas.procs[victim], lambda: _stalled_upload(bus, caught))
        _, kv_leader = await bus.stream_replicas(f"KV_{deployment.topology.leases_bucket}")
        assert kv_leader is not None
        killed = replicas.kill(victim)
        deployment.cluster.kill(kv_leader)
        print(f"{victim} killed -9 mid-upload with {kv_leader}, the leases' leader;", end=" ")
        took = await _serving(bus, {survivor: 4}, deployment) - killed
        print(f"{survivor} holds all after {took:.2f} s")
        await asyncio.sleep(2.0)  # the survivor's own uploads finish; the victim's never will
        left = await eventually(lambda: uploads_in_progress(bus), timeout=30, message="a read")
        assert caught & left, "the kill did not land mid-upload"
        deployment.cluster.restart(kv_leader)

        trickle.cancel()
        await _finished_once(client, deployment, run_ids + flowing)
        assert replicas.procs[survivor].poll() is None
        logs = "".join(p.read_text() for p in deployment.workdir.glob("proc-*.log"))
        assert logs.count("partition taken over") >= 8 and "partition handed over" in logs
    finally:
        await client.close()
        await bus.close()


async def test_a_stopped_owner_is_fenced_out_rejoins_and_a_leaver_hands_over(
    deployment: Deployment,
) -> None:
    _partitioned(deployment)
    assert deployment.run("topology", "apply").returncode == 0
    bus = await deployment.bus()
    client = await Client.connect(deployment.cluster.url, deployment.topology)
    topo = deployment.topology
    try:
        replicas = Replicas(deployment)
        replicas.start("r1")
        replicas.start("r2")
        deployment.spawn("worker", FLOWS)
        await eventually(lambda: _registered(bus), timeout=60, message="workers ready")
        await _serving(bus, {"r1": 2, "r2": 2}, deployment)
        run_ids = await _trigger(client, 200, "stop")
        flowing: list[str] = []
        trickle = asyncio.create_task(_trickle(client, flowing))
        held = [p for p, owner in (await owners(bus)).items() if owner == "r1"]
        old_fences = {p: (await bus.last_fence(p))[0] for p in held}

        # SIGSTOP the owner past its lease: r2 takes its partitions over...
        replicas.procs["r1"].send_signal(signal.SIGSTOP)
        await _serving(bus, {"r2": 4}, deployment)
        # The table names r2 as soon as it claims, before its marker is on the fence: read the
        # new markers once they are r2's (read at once, on a loaded machine a partition's was
        # still r1's, and r1's own writes before the SIGSTOP looked like writes past it).
        new_fences = await eventually(
            lambda: _fenced_by(bus, held, "r2"), timeout=60, message=f"r2's markers on {held}"
        )
        # ...and r1, woken, stops owning them (its writes refused, its leases gone). The table
        # names r1 as soon as it claims, so it may be stopped mid-takeover: then its takeover
        # may fail first (a request timed out while it was stopped), finds the lease taken and
        # says so too. Either way within r1's first round after SIGCONT (a heartbeat and a
        # renewal, under a second each here, plus a read of the lease, 5 s at most): 30 s is
        # for a loaded machine.
        replicas.procs["r1"].send_signal(signal.SIGCONT)
        log = replicas.log("r1")
        try:
            await eventually(
                lambda: _said(log, "stopped owning the partition", len(held)),
                timeout=30,
                message=f"r1 to notice it lost {held}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- r1's whole log ---\n{log.read_text()}") from None
        # Nothing published under r1's old fence of a partition landed after r2's marker on that
        # partition. (Per partition: r2 may take one partition seconds before another — on a
        # loaded machine even before the SIGSTOP, from a slow renewal — and r1 rightly writes
        # into a partition whose fence has not moved yet.)
        # (A partition r2 had fenced already when the old markers were read is not r1's.)
        old_markers = {
            (topo.fence_subject(p), old_fences[p]): new_fences[p]
            for p in held
            if old_fences[p] != new_fences[p]
        }
        stale = [
            (m.stream_seq, m.subject)
            for m in await bus.read_stream(
                topo.events_stream, f"{topo.namespace}.evt.>", limit=10**6
            )
            if (fence := fence_of(dict(m.headers))) in old_markers
            and m.stream_seq > old_markers[fence]
        ]
        assert stale == []
        refused = log.read_text().count("refused by the fence")
        print(f"\nr1's writes refused by the fence after SIGCONT: {refused}")

        # r1 rejoins and gets its share back; then r2 leaves and hands everything to r1
        await _serving(bus, {"r1": 2, "r2": 2}, deployment)
        replicas.procs["r2"].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(replicas.procs["r2"].wait, 60) == 0
        await _serving(bus, {"r1": 4}, deployment)
        trickle.cancel()
        await _finished_once(client, deployment, run_ids + flowing)
        assert replicas.procs["r1"].poll() is None
    finally:
        await client.close()
        await bus.close()


async def test_runs_outlive_the_event_streams_retention(deployment: Deployment) -> None:
    """A run asleep, and one waiting for an upstream event, longer than the event stream keeps
    events — through a takeover: the successor knows them from the snapshot alone."""
    deployment.topology = dataclasses.replace(
        deployment.topology, event_max_age_s=RETENTION_S, duplicate_window_s=RETENTION_S
    )
    bus = await deployment.bus()
    await bus.apply_topology()  # (`conveyor topology apply` cannot shorten the retention)
    client = await Client.connect(deployment.cluster.url, deployment.topology)
    topo = deployment.topology
    try:
        replicas = Replicas(deployment)
        replicas.start("r1")
        deployment.spawn("worker", FLOWS)
        await eventually(lambda: _registered(bus), timeout=60, message="workers ready")
        await _serving(bus, {"r1": 1}, deployment)
        replicas.start("r2")
        napping = await client.trigger("napper", {"seconds": RETENTION_S * 2.5})
        waiting = await client.trigger("waiter", {"key": "order-7"})
        first = await bus.last_sequence(topo.events_stream)
        await eventually(
            lambda: _status_is(client, waiting, "running"), timeout=30, message="the waiter"
        )
        await asyncio.sleep(2 * SNAPSHOT_S)  # a snapshot holds both runs
        replicas.kill("r1")
        await _serving(bus, {"r2": 1}, deployment)
        await eventually(
            lambda: _aged_out(bus, first), timeout=RETENTION_S * 3, message="the retention"
        )
        approved = CloudEvent.create(
            "com.example.approved", "test", {"by": "ada"}, subject="order-7"
        )
        await _retrying(lambda: client.bus.publish(topo.ingest_subject(approved.type), approved))
        waited = await _retrying(lambda: client.wait(waiting, timeout=60))
        assert waited["status"] == "succeeded" and waited["output"] == {"by": "ada", "then": 2}
        napped = await _retrying(lambda: client.wait(napping, timeout=RETENTION_S * 4))
        assert napped["status"] == "succeeded" and napped["output"]["after"] == 2
    finally:
        await client.close()
        await bus.close()


async def _said(log: Path, what: str, times: int) -> bool:
    return log.exists() and log.read_text().count(what) >= times


async def _status_is(client: Client, run_id: str, status: str) -> bool:
    try:
        found = await client.status(run_id)
    except BusError:
        return False
    return found is not None and found["status"] == status


async def _aged_out(bus: Bus, sequence: int) -> bool:
    """Whether the event stream no longer holds message `sequence` (its retention passed)."""
    try:
        info = await bus.js.stream_info(bus.topology.events_stream)
    except nats.errors.Error:
        return False
    return int(info.state.first_seq or 0) > sequence


async def _trickle(client: Client, run_ids: list[str]) -> None:
    """A run every 200 ms until cancelled (each retried with its key through elections)."""
    for index in range(100_000):
        key = f"trickle-{index}"
        run_ids.append(
            await _retrying(lambda k=key: client.trigger("relay", {}, idempotency_key=k))
        )
        await asyncio.sleep(0.2)


def _has_outbox(replicas: Replicas, name: str):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        return outbox_rows(replicas.state_dir(name)) > 0

    return probe


async def _stalled_upload(bus: Bus, caught: set[str]) -> bool:
    """Whether an upload stays unfinished while the victim is frozen: the victim's, not one of
    the survivor's (which finish within moments); its chunk subjects go into `caught`."""
    caught.clear()
    first = await uploads_in_progress(bus)
    if not first:
        return False
    await asyncio.sleep(0.3)  # what is the survivor's finishes meanwhile: no event says so
    caught.update(first & (await uploads_in_progress(bus) or set()))
    return bool(caught)
