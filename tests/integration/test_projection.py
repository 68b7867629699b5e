"""The read-side projection: the same events, the same machine, its own store, rebuildable."""

from __future__ import annotations

from events.testing import eventually
from orchestrator.core.status import run_status
from orchestrator.runtime.queries import Queries
from orchestrator.runtime.store import Store
from tests.integration import flows
from tests.integration.harness import Harness
from tests.integration.test_runs import start


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

    # Rebuild: a fresh store and a fresh consumer replay the stream from its start.
    await harness.stop_engine(projection)
    await harness.client.bus.delete_consumer(
        harness.topology.events_stream, harness.topology.projection_consumer(0)
    )
    _, rebuilt = await harness.start_projection(harness.workdir / "rebuilt.db")
    for final in finals:
        projected = await eventually(
            lambda f=final: _projected(rebuilt, f["run_id"], f["status"]),
            message=f"the rebuilt projection to show run {final['run_id']}",
        )
        assert _comparable(projected) == _comparable(final)
