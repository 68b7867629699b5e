"""Every run records what started it (cron instant, parent run, the CLI and who ran it), from the
run.requested envelope, on a real nats-server."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import socket
import subprocess
import sys

from orchestrator.triggers.scheduler import schedule_run_id
from tests.integration import trigger_flows as flows
from tests.integration.harness import Harness


async def _start(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.start_worker(flows.TASKS)
    await harness.register(flows.hourly, flows.child_double, flows.parent_of_double)


async def test_a_cron_run_and_a_sub_workflow_say_what_started_them(harness: Harness) -> None:
    await _start(harness)
    instant = dt.datetime.fromisoformat("2030-01-01T10:00:00+01:00").timestamp()
    scheduler = harness.scheduler(clock=lambda: instant - 30)
    await scheduler.tick(instant - 30)
    [run_id] = await scheduler.tick(instant + 1)
    assert run_id == schedule_run_id("hourly", 0, instant)
    final = await harness.client.wait(run_id, timeout=30)
    assert final["trigger"]["kind"] == "cron"
    assert final["trigger"]["source"] == "conveyor/scheduler"
    assert final["trigger"]["by"] == "schedule at 2030-01-01T10:00:00+01:00"

    parent = await harness.run(flows.parent_of_double, {"x": 2})
    worker = parent["nodes"]["child_double"]["attempt_history"][0]["worker"]
    child = await harness.client.status(worker.removeprefix("run:"))
    assert child is not None
    assert child["trigger"]["kind"] == "parent"
    assert child["trigger"]["detail"] == {
        "run_id": parent["run_id"],
        "node_id": "child_double",
        "attempt": 1,
    }


async def test_a_run_started_from_the_cli_names_the_user(harness: Harness) -> None:
    await _start(harness)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "orchestrator.cli", "run", "child_double", "--input", '{"x": 4}'],
        env=harness.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[0]
    final = await harness.client.wait(run_id, timeout=30)
    assert final["trigger"]["kind"] == "cli"
    assert final["trigger"]["by"] == f"{getpass.getuser()}@{socket.gethostname()}"
