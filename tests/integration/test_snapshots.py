"""Snapshots and fences on a real nats-server (lease mode's building blocks).

- Snapshot + replay of any prefix gives the same store as applying every event once: the machine
  is pure, the processed-id dedupe drops what the snapshot already holds, and outbox rows are
  keyed by deterministic ids. Drawn by hypothesis over interleavings of three runs captured
  live (a fan-out, a retry, a cancellation), duplicates included, the snapshot taken after any
  prefix and the replay starting anywhere at or before it (an ack floor lags what was applied).
- A snapshot survives the object store (its digest checked; a damaged one refused) and is
  recorded as the partition's newest; pruning never deletes a later epoch's.
- A tenured connection's writes into the event stream are refused once a later marker is on the
  fence (`Deposed`), pipelined or not; consumers are per epoch and start where they are told.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import EmbeddedServer, Topology
from events.acks import Outcome
from events.bus import Bus, Delivery
from events.codec import encode
from events.envelope import CloudEvent
from events.errors import BusError, Deposed
from events.fencing import Tenure, marker
from events.testing import eventually, unique_namespace
from orchestrator.core.compiler import compile_spec
from orchestrator.runtime.applier import Applier
from orchestrator.runtime.metrics import EngineMetrics
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.snapshots import Snapshots, dump, load
from orchestrator.runtime.store import Store

CAPTURED = sorted((Path(__file__).parents[1] / "unit" / "histories" / "captured").glob("*.json"))
T0 = 1_800_000_000.0
TABLES = ("runs", "nodes", "processed", "outbox", "waits", "schedule_cursors")
_PREPARED: dict[str, Topology] = {}  # server URL -> the namespace the property runs in


def _histories() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in CAPTURED]


def _event(raw: dict[str, Any]) -> CloudEvent:
    return CloudEvent(
        id=raw["id"],
        source=raw["source"],
        type=raw["type"],
        time=raw["time"],
        subject=raw["subject"],
        extensions=raw["extensions"],
        data=base64.b64decode(raw["data_base64"]),
    )


def _delivery(topology: Topology, event: CloudEvent, run_id: str, seq: int) -> Delivery:
    headers, body = encode(event)
    subject = topology.event_subject(event.type, run_id)
    # Stored a second apart: each event is applied at its time in the stream.
    stored_us = int((T0 + seq) * 1_000_000)
    return Delivery(
        subject, headers, body, 1, seq, None, stream=topology.events_stream, stored_us=stored_us
    )


@st.composite
def _streams(draw: st.DrawFn) -> list[tuple[int, int]]:
    """An interleaving of every captured run's events (each run's own order kept), some
    delivered twice: (history index, event index) in stream order."""
    sizes = [len(h["events"]) for h in _histories()]
    cursors = [0] * len(sizes)
    out: list[tuple[int, int]] = []
    while any(c < n for c, n in zip(cursors, sizes, strict=True)):
        pending = [i for i, (c, n) in enumerate(zip(cursors, sizes, strict=True)) if c < n]
        which = draw(st.sampled_from(pending))
        out.append((which, cursors[which]))
        if draw(st.integers(0, 9)) == 0:  # a redelivery, right after or later
            out.insert(draw(st.integers(len(out) - 1, len(out))), (which, cursors[which]))
        cursors[which] += 1
    return out


async def _apply(bus: Bus, store: Store, deliveries: list[Delivery], first: int) -> None:
    """Apply deliveries[first:] one batch each, as the engine does (no publishing: the outbox
    rows stay, as after a crash), each at its time in the stream."""
    applier = Applier(bus, store, EngineMetrics(), projection=False, cache_size=100)
    for index in range(first, len(deliveries)):
        items = await applier.prepare([deliveries[index]])
        applied = await applier.apply(items)
        await store.commit(applied.batch)
        applier.cache.forget_finished(applied.touched)


def _contents(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as connection:
        return {t: sorted(connection.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}


async def _scenario(
    url: str, workdir: Path, order: list[tuple[int, int]], prefix: int, lag: int
) -> None:
    topology = _PREPARED.get(url) or Topology(namespace=unique_namespace("snap"))
    bus = await Bus.connect(url, topology, name="snapshot-property")
    try:
        histories = _histories()
        if url not in _PREPARED:  # once: the streams, and the captured runs' workflows
            await bus.apply_topology()
            await Registry(bus).register_all([compile_spec(h["spec"]).spec for h in histories])
            _PREPARED[url] = topology
        deliveries = [
            _delivery(topology, _event(histories[h]["events"][e]), histories[h]["run_id"], i + 1)
            for i, (h, e) in enumerate(order)
        ]
        continuous = await Store.open(workdir / "continuous.db")
        await _apply(bus, continuous, deliveries, 0)
        await continuous.close()

        cut = min(prefix, len(deliveries))
        before = await Store.open(workdir / "before.db")
        await _apply(bus, before, deliveries[:cut], 0)
        await before.close()
        load(dump(workdir / "before.db"), workdir / "restored.db")
        restored = await Store.open(workdir / "restored.db")
        await _apply(bus, restored, deliveries, max(0, cut - lag))
        await restored.close()
        assert _contents(workdir / "restored.db") == _contents(workdir / "continuous.db")
    finally:
        await bus.close()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(order=_streams(), prefix=st.integers(0, 80), lag=st.integers(0, 10))
def test_snapshot_and_replay_of_any_prefix_equals_applying_everything_once(
    nats_server: EmbeddedServer,
    tmp_path_factory: pytest.TempPathFactory,
    order: list[tuple[int, int]],
    prefix: int,
    lag: int,
) -> None:
    workdir = tmp_path_factory.mktemp("property")
    asyncio.run(_scenario(nats_server.url, workdir, order, prefix, lag))


def test_a_truncated_snapshot_is_refused(tmp_path: Path) -> None:
    asyncio.run(_filled_store(tmp_path / "a.db"))
    data = dump(tmp_path / "a.db")
    load(data, tmp_path / "b.db")
    assert _contents(tmp_path / "b.db") == _contents(tmp_path / "a.db")
    with pytest.raises(ValueError, match="truncated"):
        load(data[: len(data) // 2], tmp_path / "c.db")
    assert not (tmp_path / "c.db").exists()


async def _filled_store(db: Path) -> None:
    store = await Store.open(db)
    await store.set_schedule_cursor("wf#0", 12.5)
    await store.close()


async def test_snapshots_round_trip_through_the_object_store_and_prune_only_the_past(
    bus: Bus, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    store = await Store.open(db)
    for index in range(2_000):  # enough rows for several object chunks
        await store.set_schedule_cursor(f"workflow-{index}#{'x' * 200}", float(index))
    await store.close()
    await bus.js.add_consumer(
        bus.topology.events_stream,
        durable_name="orchestrator-p0-e3",
        filter_subject=f"{bus.topology.namespace}.evt.0.>",
    )
    snapshots = Snapshots(bus, db, partition=0, epoch=3, consumer="orchestrator-p0-e3")
    ref, recorded, _ = await snapshots.take()
    assert ref.name == "p0/e3/s0" and ref.size > 0 and recorded
    restored = Snapshots(bus, tmp_path / "restored.db", 0, 4, "orchestrator-p0-e4")
    assert await restored.newest() == ref
    timing = await restored.restore(ref)
    assert timing.size == ref.size
    assert _contents(tmp_path / "restored.db") == _contents(db)
    # Pruning deletes what covers no more than the recorded snapshot, of this epoch or an
    # earlier one; never a later epoch's, nor one covering more (it may be about to be
    # recorded), nor another partition's.
    for name in ("p0/e2/s0", "p0/e3/s5", "p0/e9/s0", "p1/e1/s0"):
        await bus.put_snapshot(name, b"x")
    await snapshots.prune(ref)
    assert await bus.snapshot_names() == ["p0/e3/s0", "p0/e3/s5", "p0/e9/s0", "p1/e1/s0"]
    with pytest.raises(BusError, match="does not exist"):
        await bus.get_snapshot("p0/e2/s0")


async def test_a_deposed_owner_cannot_write_into_the_event_stream(bus: Bus) -> None:
    topology = bus.topology
    first = await bus.publish_fence(0, 0, marker("a", 1))
    assert first is not None
    assert await bus.publish_fence(0, 0, marker("x", 1)) is None  # the fence is a CAS
    bus.tenure = Tenure(0, 1, topology.fence_subject(0), first)
    subject = topology.event_subject("io.conveyor.run.succeeded", "r1")
    assert await bus.publish_raw(subject, {"Nats-Msg-Id": "one"}, b"{}") is False
    assert await bus.fence_holds()
    successor = await bus.publish_fence(0, first, marker("b", 2))
    assert successor is not None and await bus.last_fence(0) == (successor, marker("b", 2))
    assert not await bus.fence_holds()
    with pytest.raises(Deposed, match="another replica owns it now"):
        await bus.publish_raw(subject, {"Nats-Msg-Id": "two"}, b"{}")
    acked = await bus.send_many([(subject, {"Nats-Msg-Id": f"many-{i}"}, b"{}") for i in range(3)])
    with pytest.raises(Deposed):
        await acked()
    # Only the event stream is fenced: what is not an event goes through (dead letters).
    await bus.publish_raw(topology.dlq_subject("orchestrator"), {}, b"{}")
    bus.tenure = None
    stored = await bus.stream_messages(topology.events_stream, subject)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == ["one"]


async def test_consumers_are_per_epoch_and_start_where_the_tenure_says(bus: Bus) -> None:
    topology = bus.topology
    for index in range(5):
        event = CloudEvent.create("io.conveyor.timer.fired", "test", {}, id=f"e{index}")
        headers, body = encode(event)
        await bus.publish_raw(topology.event_subject(event.type, f"r{index}"), headers, body)
    base = topology.orchestrator_consumer(0)
    bus.tenure = Tenure(0, 7, topology.fence_subject(0), 0, {base: 4})
    puller = await bus.orchestrator_puller(0)
    got = await puller.fetch(10, timeout=1.0)
    assert [d.stream_seq for d in got] == [4, 5]
    for delivery in got:
        await delivery.settle(Outcome.DONE)
    # (Acks are processed by the server on its own time: the floor may lag, never lead.)
    await eventually(
        lambda: _floors_are(bus, base, {f"{base}-e7": 5}), timeout=5, message="the acks"
    )
    bus.tenure = None


async def _floors_are(bus: Bus, base: str, expected: dict[str, int]) -> bool:
    return await bus.consumer_floors(bus.topology.events_stream, base) == expected
