"""Capture event histories from real runs, for `tests/unit/test_captured_histories.py`.

    .venv/bin/python -m tests.unit.histories.capture     # rewrites histories/captured/*.json

Unlike `record.py` (histories written by hand, event by event), these come from a live system:
an embedded nats-server, the orchestrator and a worker built by the composition root, runs
triggered through the public client. Each file holds the run's spec, every CloudEvent of the run
as the event stream holds it (the orchestrator's inputs and its outputs, in stream order), and
the state the orchestrator stored. The test folds the events through the pure machine and must
arrive at that state: the log is the source of truth (Temporal's replayer tests do the same
with histories captured from a live server).
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path
from typing import Any

from events import EmbeddedServer, Topology
from events.settings import NatsSettings
from orchestrator import roles
from orchestrator.cli.replay import read_events
from orchestrator.runtime.registry import Registry
from tests.integration import flows

HERE = Path(__file__).parent / "captured"


async def _capture() -> None:
    HERE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer() as server:
        common = roles.Common(
            nats=NatsSettings(servers=(server.url,)), topology=Topology(namespace="capture")
        )
        async with roles.Process(common, handle_signals=False) as process:
            engine = await roles.orchestrator(process, db=Path(tmp) / "c.db", topology="apply")
            await roles.worker(
                process, [flows.flaky, flows.square, flows.total, flows.make_range, flows.block]
            )
            client = await roles.client(process)
            await Registry(engine.bus).register_all(
                [flows.retry_then_succeed.spec, flows.fan_out.spec, flows.long_running.spec]
            )
            supervisor = process.build_supervisor()
            await supervisor.start()
            serving = asyncio.create_task(supervisor.serve())
            try:
                import os

                os.environ["CONVEYOR_TEST_DIR"] = tmp
                runs = {
                    "live_retry_then_succeed": await client.trigger(
                        "retry_then_succeed", {"succeed_on": 3}
                    ),
                    "live_fan_out": await client.trigger("fan_out", {"n": 5}),
                }
                cancelled = await client.trigger("long_running", {"seconds": 30})
                for run_id in runs.values():
                    await client.wait(run_id, timeout=60)
                await _until_running(client, cancelled)
                await client.cancel(cancelled, "captured: cancelled while its task ran")
                await client.wait(cancelled, timeout=60)
                runs["live_cancelled_midway"] = cancelled
                for name, run_id in runs.items():
                    await _write(client, name, run_id)
            finally:
                supervisor.stop()
                await serving


async def _until_running(client: Any, run_id: str) -> None:
    for _ in range(400):
        status = await client.status(run_id)
        if status and status["nodes"]["block"]["status"] == "running":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never started its task")


async def _write(client: Any, name: str, run_id: str) -> None:
    stored = await client.status(run_id)
    spec = await client.registry.get(stored["workflow"], stored["version"])
    events = [
        {
            "id": e.id,
            "source": e.source,
            "type": e.type,
            "time": e.time,
            "subject": e.subject,
            "extensions": dict(e.extensions),
            "data_base64": base64.b64encode(e.data).decode(),
        }
        for e in await read_events(client, run_id)
    ]
    document = {
        "name": name,
        "run_id": run_id,
        "spec": spec.spec.model_dump(mode="json"),
        "events": events,
        "stored": stored,
    }
    (HERE / f"{name}.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"captured {name}: {len(events)} events, {stored['status']}")


if __name__ == "__main__":
    asyncio.run(_capture())
