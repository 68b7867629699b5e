"""The read-side projection: the same events, the same machine, its own store, rebuildable."""

from __future__ import annotations

from pathlib import Path

from events import EmbeddedServer, Topology
from events.testing import eventually, unique_namespace
from orchestrator.core.status import run_status
from orchestrator.runtime.queries import Queries
from orchestrator.runtime.store import Store
from tests.integration import flows
from tests.integration.harness import Harness
from tests.integration.test_runs import ALL_TASKS, start


def _comparable(status: dict[str, object]) -> dict[str, object]:
    """What must match between two stores: everything but wall-clock timings."""
    nodes = status["nodes"]
    assert isinstance(nodes, dict)
    return {
        "status": status["status"],
        "output": status["output"],
        "error": status["error"],
        "nodes": {
            k: (v["status"], v["attempts"], v.get("output"), v.get("children"))
            for k, v in nodes.items()
        },
    }


async def _projected(store: Store, run_id: str, status: str) -> dict[str, object] | None:
    run = await Queries(store).read_run(run_id)
    return run_status(run) if run is not None and run.status == status else None


async def test_projection_follows_the_orchestrator_and_rebuilds_from_the_stream(
    harness: Harness,
) -> None:
    await start(harness, flows.fan_out, flows.retry_then_succeed, flows.non_retryable)
    projection, store = await harness.start_projection(harness.workdir / "projection.db")
    finals = [
        await harness.run(flows.fan_out, {"n": 20}),
        await harness.run(flows.retry_then_succeed, {"succeed_on": 2}),
        await harness.run(flows.non_retryable, {"payload": {"k": "v"}}),
    ]
    for final in finals:
        projected = await eventually(
            lambda f=final: _projected(store, f["run_id"], f["status"]),
            message=f"the projection to show run {final['run_id']} {final['status']}",
        )
        assert _comparable(projected) == _comparable(final)
    assert projection.metrics.outbox_published == 0  # a projection publishes nothing

    # Rebuild: a fresh store replays the stream from its start (no server-side state).
    await harness.stop_engine(projection)
    _, rebuilt = await harness.start_projection(harness.workdir / "rebuilt.db")
    for final in finals:
        projected = await eventually(
            lambda f=final: _projected(rebuilt, f["run_id"], f["status"]),
            message=f"the rebuilt projection to show run {final['run_id']}",
        )
        assert _comparable(projected) == _comparable(final)


async def test_a_projection_holds_every_partition_and_replicas_do_not_split_events(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    """`conveyor api` replicas each read every partition's events through their own ordered
    reader: a fresh database shows every run, and two replicas both show all of them."""
    topology = Topology(namespace=unique_namespace("proj"), partitions=3)
    harness = await Harness(nats_server, topology, tmp_path).open()
    try:
        for partition in range(3):
            await harness.start_orchestrator(partition=partition)
        await harness.start_worker(ALL_TASKS)
        await harness.register(flows.chain)
        # Run ids chosen so that every partition holds runs (random ones may miss one).
        run_ids = [f"proj-{n}" for n in range(40)]
        chosen = [next(r for r in run_ids if topology.partition(r) == p) for p in range(3)]
        chosen += [r for r in run_ids if r not in chosen][:6]
        finals = []
        for n, run_id in enumerate(chosen):
            await harness.client.trigger("chain", {"start": n}, run_id=run_id)
            finals.append(await harness.client.wait(run_id, timeout=60))
        assert {topology.partition(f["run_id"]) for f in finals} == {0, 1, 2}
        _, first = await harness.start_projection(tmp_path / "api-1.db")
        _, second = await harness.start_projection(tmp_path / "api-2.db")
        for store in (first, second):
            for final in finals:
                projected = await eventually(
                    lambda s=store, f=final: _projected(s, f["run_id"], "succeeded"),
                    message=f"run {final['run_id']} in every projection",
                )
                assert projected["output"] == final["output"]
    finally:
        await harness.close()
