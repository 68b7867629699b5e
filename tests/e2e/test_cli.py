"""The `conveyor` command line as a user runs it: real processes, a real server, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from events.envelope import CloudEvent
from events.models import RUN_REQUESTED, RunRequested
from events.testing import eventually
from tests.integration import flows
from tests.integration.harness import FLOWS, Harness
from tests.integration.test_runs import ALL_TASKS

ROOT = Path(__file__).resolve().parents[2]


async def conveyor(
    harness: Harness, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `conveyor ARGS` against the test's server and namespace."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=harness.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=harness.workdir,
    )


async def started(harness: Harness, *workflows: flows.Workflow) -> Harness:
    await harness.start_orchestrator()
    await harness.start_worker(ALL_TASKS)
    await harness.register(*workflows)
    return harness


async def test_run_wait_json_prints_only_the_final_status(harness: Harness) -> None:
    await started(harness, flows.chain)
    result = await conveyor(harness, "run", "chain", "--input", '{"start": 5}', "--wait", "--json")
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)
    assert final["status"] == "succeeded"
    assert final["output"] == 5 + flows.CHAIN_LENGTH
    assert set(final) >= {"run_id", "workflow", "status", "output", "error", "nodes"}


async def test_run_wait_shows_progress_and_result(harness: Harness) -> None:
    await started(harness, flows.retry_then_succeed)
    result = await conveyor(harness, "run", "retry_then_succeed", "--wait")
    assert result.returncode == 0, result.stderr
    assert "flaky: succeeded" in result.stderr
    assert "succeeded" in result.stdout and '"attempt": 3' in result.stdout


async def test_failed_run_exits_1_with_the_error(harness: Harness) -> None:
    await started(harness, flows.non_retryable)
    result = await conveyor(
        harness, "run", "non_retryable", "--input", '{"payload": {"a": "b"}}', "--wait"
    )
    assert result.returncode == 1
    assert "NonRetryableError" in result.stdout and "node 'reject'" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_flow"], "unknown workflow 'no_such_flow'"),
        (["run", "chain", "--input", "{not json"], "--input is not valid JSON"),
        (["run", "chain", "--input", "[1, 2]"], "--input must be a JSON object"),
        (
            ["run", "chain", "--input", '{"start": "abc"}'],
            "input.start: 'abc' is not of type 'integer'",
        ),
        (["status", "nosuchrun"], "no run 'nosuchrun'"),
        (["cancel", "nosuchrun"], "no run 'nosuchrun'"),
        (["api"], "the API needs a token"),
        (["retry", "nosuchrun"], "no run 'nosuchrun'"),
    ],
)
async def test_bad_usage_exits_2_and_says_what(
    harness: Harness, args: list[str], message: str
) -> None:
    await started(harness, flows.chain)
    result = await conveyor(harness, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert await harness.client.runs() == []  # nothing was started


async def test_unreachable_nats_exits_3(harness: Harness) -> None:
    result = await conveyor(harness, "run", "chain", "--nats", "nats://127.0.0.1:1")
    assert result.returncode == 3
    assert "cannot connect to NATS at nats://127.0.0.1:1" in result.stderr


async def test_status_and_cancel(harness: Harness) -> None:
    await started(harness, flows.long_running)
    result = await conveyor(harness, "run", "long_running", "--input", '{"seconds": 60}')
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()

    async def running() -> bool:
        status = await harness.client.status(run_id)
        return status is not None and status["nodes"]["block"]["status"] == "running"

    await eventually(running, message="the task to start")
    status = json.loads((await conveyor(harness, "status", run_id, "--json")).stdout)
    assert status["status"] == "running"
    assert status["nodes"]["block"] == status["nodes"]["block"] | {
        "status": "running",
        "attempts": 1,
    }
    cancelled = await conveyor(harness, "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    final = await harness.client.wait(run_id, timeout=20)
    assert final["status"] == "cancelled"
    text = await conveyor(harness, "status", run_id)
    assert "cancelled" in text.stdout


async def test_run_with_a_priority_status_and_flow_of_a_run_queued_behind_a_limit(
    harness: Harness,
) -> None:
    await started(harness, flows.one_lane_at_a_time)
    ahead = await harness.client.trigger("one_lane_at_a_time", {"lane": "a", "seconds": 60})

    async def running() -> bool:
        status = await harness.client.status(ahead)
        return status is not None and status["status"] == "running"

    await eventually(running, message="the run ahead to start")
    args = ["--input", '{"lane": "a", "seconds": 0.01}', "--priority", "9"]
    result = await conveyor(harness, "run", "one_lane_at_a_time", *args)
    assert result.returncode == 0, result.stderr
    behind = result.stdout.strip()

    async def queued() -> dict[str, Any] | None:
        status = await harness.client.status(behind)
        return status if status is not None and status["status"] == "queued" else None

    assert (await eventually(queued, message="the run behind to queue"))["priority"] == 9
    text = (await conveyor(harness, "status", behind)).stdout
    assert "· queued" in text
    assert "waiting: queued behind run concurrency limit 1 (key a): #1 in line, 1 holding" in text
    listed = (await conveyor(harness, "flow")).stdout
    assert "run concurrency 1 of one_lane_at_a_time (key a): 1 holding, 1 queued" in listed
    [limiter] = json.loads((await conveyor(harness, "flow", "--json")).stdout)
    assert (limiter["name"], limiter["key"], limiter["holding"], limiter["waiting"]) == (
        "one_lane_at_a_time",
        "a",
        1,
        1,
    )
    await harness.client.cancel(ahead)
    assert (await harness.client.wait(behind, timeout=30))["status"] == "succeeded"


async def test_register_yaml_spec_and_run_it(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.start_worker(ALL_TASKS)
    spec = harness.workdir / "flow.yaml"
    spec.write_text(
        "name: yaml_flow\n"
        "nodes:\n"
        "  - id: first\n    task: inc\n    inputs: {x: $.input.start}\n"
        "  - id: second\n    task: inc\n    inputs: {x: $.nodes.first}\n"
        "output: $.nodes.second\n"
    )
    registered = await conveyor(harness, "register", str(spec))
    assert registered.returncode == 0, registered.stderr
    assert "registered yaml_flow version 1" in registered.stdout
    again = await conveyor(harness, "register", str(spec))
    assert "version 1" in again.stdout  # same spec, same version
    result = await conveyor(
        harness, "run", "yaml_flow", "--input", '{"start": 40}', "--wait", "--json"
    )
    assert json.loads(result.stdout)["output"] == 42


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "name: bad\nnodes:\n  - {id: a, task: t, inputs: {x: $.nodes.b}}\n"
            "  - {id: b, task: t, inputs: {x: $.nodes.a}}\n",
            "cycle: a -> b -> a",
        ),
        (
            "name: bad\nnodes:\n  - {id: a, task: t, retires: 3}\n",
            "node 'a': unknown option 'retires'",
        ),
        (
            "name: bad\nnodes:\n  - {id: a, task: t, inputs: {x: $.nodes.zz}}\n",
            "node 'a': refers to unknown node 'zz'",
        ),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
async def test_register_rejects_bad_specs(harness: Harness, body: str, message: str) -> None:
    spec = harness.workdir / "bad.yaml"
    spec.write_text(body)
    result = await conveyor(harness, "register", str(spec))
    assert result.returncode == 2
    assert message in result.stderr
    assert await harness.client.registry.names() == []  # nothing registered


async def test_worker_drains_in_flight_work_on_sigterm(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.long_running)
    worker = harness.spawn_worker(FLOWS, "--grace", "30")
    run_id = await harness.client.trigger("long_running", {"seconds": 1.5})
    await eventually(lambda: _exists(harness.workdir / "block.started"), message="task start")
    worker.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait, 30)
    assert code == 0, harness.logs()
    status = await harness.client.status(run_id)
    assert status is not None
    assert status["nodes"]["block"]["status"] == "succeeded"  # finished inside the grace period


async def test_worker_hands_back_unfinished_work_after_the_grace_period(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.register(flows.survive_worker_crash)
    worker = harness.spawn_worker(FLOWS, "--grace", "0.2")
    run_id = await harness.client.trigger("survive_worker_crash", {"x": 2})
    await eventually(lambda: _exists(harness.workdir / "victim.started"), message="task start")
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0, harness.logs()
    harness.spawn_worker()  # takes the nak'ed task at once (no ack-wait delay)
    final = await harness.client.wait(run_id, timeout=30)
    assert final["status"] == "succeeded" and final["output"] == 20


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_quickstart_example_runs_end_to_end(tmp_path: Path) -> None:
    """The README's first command, minus the install: the ML example on the embedded default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "dev",
            str(ROOT / "examples" / "ml_pipeline.py"),
            "--run",
            "ml_pipeline",
            "--home",
            str(tmp_path / "home"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "train: succeeded (6/6 done)" in result.stderr
    assert "evaluate: succeeded" in result.stderr
    assert "succeeded" in result.stdout
    report = json.loads(result.stdout.split("output: ", 1)[1])
    assert report["r2"] > 0.95
    assert report["weights"] == pytest.approx([3.0, -2.0, 0.5], abs=0.1)


async def test_dev_run_json_with_input(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "dev",
            str(ROOT / "examples" / "hello.py"),
            "--run",
            "hello",
            "--input",
            '{"name": "Ada"}',
            "--json",
            "--home",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)
    assert final["output"] == "HELLO, ADA!"
    assert final["trigger"]["kind"] == "cli"  # started from the command line, by its user


async def test_flow_control_example_runs_within_its_limits(tmp_path: Path) -> None:
    """The README's flow-control example: 12 calls at 5 a second take two waits for tokens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    example = str(ROOT / "examples" / "flow_control.py")
    command = [sys.executable, "-m", "orchestrator.cli", "dev", example, "--run", "sync_customer"]
    result = await asyncio.to_thread(
        subprocess.run,
        [*command, "--json", "--home", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded" and run["priority"] == 5
    assert run["output"]["receipt"] == "charged acct-1 for 12 orders"
    sent = sorted(pushed["sent_at"] for pushed in run["output"]["pushed"])
    assert len(sent) == 12
    # 5 admitted at once, 5 more a window later, the last 2 a window after that (the limiter's
    # clock; the worker's stamps vary by a hop, so the bound checked is a loose 1.5 s).
    assert sent[-1] - sent[0] >= 1.5, sent


async def test_logs_and_workflows_commands(harness: Harness) -> None:
    import logging

    from tests.integration.test_logs import chatty, chatty_async, logs_flow

    logging.getLogger("user").setLevel(logging.INFO)
    await harness.start_orchestrator()
    await harness.start_worker([chatty, chatty_async])
    await harness.register(logs_flow)
    listed = await conveyor(harness, "workflows", "--json")
    assert json.loads(listed.stdout) == [
        {"name": "logs_flow", "version": 1, "nodes": 2, "description": ""}
    ]
    run = await conveyor(harness, "run", "logs_flow", "--input", '{"n": 5}', "--wait", "--json")
    run_id = json.loads(run.stdout)["run_id"]

    async def logged() -> str | None:
        result = await conveyor(harness, "logs", run_id)
        return result.stdout if result.stdout.count("\n") >= 3 else None

    text = await eventually(logged, message="the run's log lines")
    assert "chatty#1 warning about to work on 5" in text
    assert "chatty#1 info    printed 5" in text
    assert "chatty_async#1 info    async line 5" in text
    only = await conveyor(harness, "logs", run_id, "--node", "chatty_async", "--json")
    assert {json.loads(line)["node_id"] for line in only.stdout.splitlines()} == {"chatty_async"}
    followed = await conveyor(harness, "logs", run_id, "--follow")
    assert followed.returncode == 0 and "printed 5" in followed.stdout


async def test_publish_and_schedules_commands(harness: Harness) -> None:
    from tests.integration import trigger_flows

    await harness.start_orchestrator()
    await harness.start_worker(trigger_flows.TASKS)
    await harness.start_router()
    await harness.register(trigger_flows.on_order, trigger_flows.hourly)
    published = await conveyor(
        harness,
        "publish",
        "com.shop.order.created",
        "--source",
        "cli",
        "--subject",
        "o-5",
        "--id",
        "cli-1",
        "--data",
        '{"order": 5}',
    )
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout) == {
        "id": "cli-1",
        "subject": f"{harness.topology.namespace}.ingest.com_shop_order_created",
        "duplicate": False,
    }

    async def triggered() -> list[dict[str, object]] | None:
        runs = await harness.client.runs(workflow="on_order")
        return runs if runs and runs[0]["status"] == "succeeded" else None

    await eventually(triggered, message="the published event to start on_order")
    bad = await conveyor(harness, "publish", "x.y", "--source", "cli", "--data", "{nope")
    assert bad.returncode == 2 and "--data is not valid JSON" in bad.stderr

    listed = json.loads((await conveyor(harness, "schedules", "--json")).stdout)
    assert [(r["workflow"], r["cron"], r["timezone"], r["paused"]) for r in listed] == [
        ("hourly", "0 * * * *", "Europe/Paris", False)
    ]
    assert all(t.endswith(("+01:00", "+02:00")) for t in listed[0]["next"])
    paused = await conveyor(harness, "schedules", "pause", "hourly")
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert json.loads((await conveyor(harness, "schedules", "--json")).stdout)[0]["paused"]
    unknown = await conveyor(harness, "schedules", "pause", "nope")
    assert unknown.returncode == 2 and "unknown workflow 'nope'" in unknown.stderr


async def test_dev_serves_the_webhook_gateway_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import socket

    import httpx

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    nats_port, hook_port = free_port(), free_port()
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(
        "hooks:\n  orders:\n    type: com.shop.order.created\n    auth: {kind: none}\n"
    )
    flows_file = ROOT / "tests" / "integration" / "trigger_flows.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "dev",
            str(flows_file),
            "--home",
            str(tmp_path),
            "--port",
            str(nats_port),
            "--hooks",
            str(hooks),
            "--webhook-port",
            str(hook_port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        async def up() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"http://127.0.0.1:{hook_port}/healthz")).is_success
            except httpx.HTTPError:
                return False

        await eventually(up, timeout=30, message="conveyor dev's webhook gateway")
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"http://127.0.0.1:{hook_port}/hooks/orders",
                json={"order": 9},
                headers={"idempotency-key": "k-9"},
            )
        assert answer.status_code == 202, answer.text
        [run] = answer.json()["runs"]
        nats = f"nats://127.0.0.1:{nats_port}"

        async def succeeded() -> dict[str, object] | None:
            result = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "orchestrator.cli",
                    "status",
                    run["run_id"],
                    "--json",
                    "--nats",
                    nats,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            status = json.loads(result.stdout) if result.returncode == 0 else None
            return status if status and status["status"] == "succeeded" else None

        final = await eventually(succeeded, timeout=30, message="the webhook's run")
        assert final["output"]["data"] == {"order": 9}  # type: ignore[index]
    finally:
        dev.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(dev.wait, 60)
        stderr = dev.stderr.read().decode() if dev.stderr else ""
        if dev.stderr:
            dev.stderr.close()
    assert code == 0, stderr


async def test_retry_of_a_run_that_failed_on_its_input_exits_2_at_once(harness: Harness) -> None:
    """The machine never retries such a run; the CLI used to publish the retry and wait forever."""
    await started(harness, flows.chain)
    # A requester that skips the client's checks (any NATS client may): the machine fails it.
    run_id = "bad-input-run"
    request = RunRequested(workflow="chain", input={"start": "abc"}, run_id=run_id)
    event = CloudEvent.create(RUN_REQUESTED, "tests", request, extensions={"runid": run_id})
    await harness.client.bus.publish(harness.topology.event_subject(RUN_REQUESTED, run_id), event)
    final = await harness.client.wait(run_id, timeout=30)
    assert final["error"]["type"] == "InvalidInput"
    result = await conveyor(harness, "retry", run_id, "--wait", timeout=30)
    assert result.returncode == 2
    assert f"run {run_id} cannot be retried: it failed on its input" in result.stderr


async def test_cancel_of_a_finished_run_exits_2(harness: Harness) -> None:
    await started(harness, flows.chain)
    run_id = await harness.client.trigger("chain", {"start": 1})
    await harness.client.wait(run_id, timeout=30)
    result = await conveyor(harness, "cancel", run_id)
    assert result.returncode == 2
    assert "already succeeded: nothing to cancel" in result.stderr


async def test_replay_folds_a_live_runs_events_to_the_stored_state(harness: Harness) -> None:
    await started(harness, flows.retry_then_succeed)
    run_id = await harness.client.trigger("retry_then_succeed", {"succeed_on": 2})
    await harness.client.wait(run_id, timeout=30)
    result = await conveyor(harness, "replay", run_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the run equals the stored state" in result.stdout
    assert "-> timer retry flaky#1" in result.stdout  # the failed first attempt's backoff
    assert "-> dispatch flaky#2" in result.stdout
    report = json.loads((await conveyor(harness, "replay", run_id, "--json")).stdout)
    assert report["equal"] is True and report["differences"] == []
    assert report["steps"][0]["type"] == RUN_REQUESTED
