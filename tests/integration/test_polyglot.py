"""A workflow served by two languages: the Node.js worker in examples/node-worker, written from
docs/protocol.md alone, runs next to the Python worker against the same real nats-server.

Needs `node` and `npm` on PATH; the example's dependencies are installed with `npm ci` on first
use (and reused afterwards).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from events.acks import Outcome
from events.ids import event_key
from events.testing import eventually
from orchestrator import workflow
from orchestrator.dsl.loader import load_module
from tests.integration.harness import Harness
from workers import task

ROOT = Path(__file__).resolve().parents[2]
NODE_WORKER = ROOT / "examples" / "node-worker"
example = load_module(str(ROOT / "examples" / "polyglot.py"))
polyglot = example.workflows["polyglot"]
word_count = example.tasks["word_count"]
PYTHON_TASKS = list(example.tasks.values())  # word_count too: external, so never served here


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the example's dependencies installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm must be on PATH to test the Node.js worker in examples/node-worker "
            "(Node >= 18)"
        )
    if not (NODE_WORKER / "node_modules" / "nats").is_dir():
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=NODE_WORKER,
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`npm ci` in {NODE_WORKER} did not finish within 180 s")
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {NODE_WORKER} failed:\n{done.stdout}\n{done.stderr}")
    return node


def spawn_node(
    harness: Harness, node: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A Node worker on the test's server and namespace; the harness stops it (SIGTERM)."""
    # Named like the harness's own process logs, so harness.logs() shows it on failure.
    with open(harness.workdir / f"proc-{len(harness.processes)}-node.log", "wb") as log:
        proc = subprocess.Popen(
            [node, *(args or ("worker.mjs",))],
            cwd=NODE_WORKER,
            env={**harness.env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    harness.processes.append(proc)
    return proc


async def start(harness: Harness, *workflows: Any) -> None:
    await harness.start_orchestrator()
    # Given every task of the module, word_count included: `external=True` keeps the Python
    # worker off the Node queue (a worker that served it would fail it with NotImplementedError).
    worker = await harness.start_worker(PYTHON_TASKS)
    assert worker.queues == ["default"]
    await harness.register(*workflows)


async def _wait(harness: Harness, run_id: str, timeout: float) -> dict[str, Any]:
    try:
        return await harness.client.wait(run_id, timeout=timeout)
    except TimeoutError:
        status = await harness.client.status(run_id)
        raise AssertionError(
            f"run {run_id} not over in {timeout}s: {status}\n{harness.logs()}"
        ) from None


async def test_node_task_output_flows_into_the_next_python_task(
    harness: Harness, node: str
) -> None:
    await start(harness, polyglot)
    spawn_node(harness, node)
    text = "<h1>Ünïcode &amp; words</h1><p>The cat saw the other cat; the end.</p>"
    final = await harness.run(polyglot, {"text": text, "title": "demo"})
    assert final["status"] == "succeeded", f"{final}\n{harness.logs()}"
    # Counted by Intl.Segmenter in Node, from what Python's clean() left of the HTML.
    stats = {
        "words": 10,
        "unique": 7,
        "longest": "Ünïcode",
        "top": [
            {"word": "the", "count": 3},
            {"word": "cat", "count": 2},
            {"word": "end", "count": 1},
        ],
    }
    assert final["output"] == {
        "stats": stats,
        "summary": "demo: 10 words, 7 distinct, longest 'Ünïcode'; "
        "most frequent: the x3, cat x2, end x1",
    }
    assert (
        final["nodes"]["clean"]["output"] == "Ünïcode & words The cat saw the other cat; the end."
    )
    assert final["nodes"]["word_count"]["status"] == "succeeded"
    assert final["nodes"]["word_count"]["attempts"] == 1


@workflow
def count_anything(value: Any) -> Any:
    # Retries allowed: the Node worker's retryable=false must still fail it at once.
    return word_count.with_options(retries=3)(value)


async def test_bad_input_fails_the_run_with_the_node_workers_typed_error(
    harness: Harness, node: str
) -> None:
    await start(harness, count_anything)
    spawn_node(harness, node)
    final = await harness.run(count_anything, {"value": 42})
    assert final["status"] == "failed", f"{final}\n{harness.logs()}"
    status = await harness.client.status(final["run_id"])
    assert status is not None
    error = status["error"]
    assert error["type"] == "InputValidationError", error
    assert (
        error["message"]
        == "input of task 'word_count' is invalid: text: expected string, got number"
    )
    assert error["retryable"] is False
    assert error["node_id"] == "word_count"
    assert error["details"] == ["text: expected string, got number"]
    assert "worker.mjs" in error["traceback"]  # a JS stack, as the protocol's traceback
    assert status["nodes"]["word_count"]["attempts"] == 1  # despite retries=3


async def test_a_task_delivered_too_often_fails_as_worker_lost(harness: Harness, node: str) -> None:
    await start(harness, polyglot)
    run_id = await harness.client.trigger("polyglot", {"text": "three words here"})
    # Play the workers that took the task and died: take it and hand it back, as often as allowed.
    # (This consumer is created with the Python worker's config; the Node worker binds to it.)
    puller = await harness.client.bus.task_puller("node", "word_count")
    for _ in range(harness.topology.task_max_deliveries):
        deliveries = await eventually(lambda: puller.fetch(1, timeout=1.0), message="a dispatch")
        await deliveries[0].settle(Outcome.SHUTDOWN)  # nak, no delay
    await puller.close()
    spawn_node(harness, node)
    final = await _wait(harness, run_id, timeout=30)
    assert final["status"] == "failed", f"{final}\n{harness.logs()}"
    error = final["error"]
    assert (error["type"], error["retryable"], error["node_id"]) == (
        "WorkerLost",
        True,
        "word_count",
    )
    assert f"delivered {harness.topology.task_max_deliveries} times" in error["message"]
    assert "even run alone from its 2nd delivery on" in error["message"]
    assert final["nodes"]["word_count"]["attempts"] == 1


async def test_a_message_that_is_not_a_dispatch_is_parked_on_the_dlq(
    harness: Harness, node: str
) -> None:
    await start(harness)
    bus, topology = harness.client.bus, harness.topology
    subject = topology.task_subject("node", "word_count")
    await bus.publish_raw(subject, {"Nats-Msg-Id": "junk-1", "x-origin": "test"}, b"not an event")
    spawn_node(harness, node)

    async def parked() -> list[Any]:
        # (stream_messages fails on a stream that never held a message: check its size first.)
        if await bus.stream_size(topology.dlq_stream) == 0:
            return []
        return await bus.stream_messages(topology.dlq_stream)

    [message] = await eventually(parked, message="the junk message on the DLQ")
    assert message.subject == f"{topology.namespace}.dlq.worker"
    assert message.data == b"not an event"
    assert message.headers["Conveyor-Dlq-Reason"].startswith("not a CloudEvent")
    assert message.headers["Conveyor-Dlq-Subject"] == subject
    assert message.headers["x-origin"] == "test"
    assert "Nats-Msg-Id" not in message.headers

    async def acked() -> bool:
        return await bus.stream_size(topology.tasks_stream) == 0

    await eventually(acked, message="the junk message to leave the work queue")


# A Node worker whose only task naps, for the drain tests: worker.mjs is also a library.
NAP_WORKER = """
import { serve } from "./worker.mjs";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
await serve({ nap: { params: { ms: "number" }, fn: async ({ ms }) => {
  await sleep(ms * Number(process.env.NAP_FACTOR ?? 1));
  return { slept: ms };
} } });
process.exit(0);
"""


@task(queue="node", external=True)
def nap(ms: int) -> dict[str, int]:
    raise NotImplementedError("served by the Node worker in NAP_WORKER")


@workflow
def napping(ms: int) -> dict[str, int]:
    return nap(ms)


async def _until_running(harness: Harness, run_id: str) -> None:
    async def running() -> bool:
        status = await harness.client.status(run_id)
        return status is not None and status["nodes"].get("nap", {}).get("status") == "running"

    await eventually(running, timeout=20, message="the nap task to start on the Node worker")


async def test_sigterm_finishes_the_task_in_flight_then_exits(harness: Harness, node: str) -> None:
    await start(harness, napping)
    proc = spawn_node(harness, node, "--input-type=module", "-e", NAP_WORKER)
    run_id = await harness.client.trigger("napping", {"ms": 1500})
    await _until_running(harness, run_id)
    proc.terminate()
    final = await _wait(harness, run_id, timeout=30)
    assert final["status"] == "succeeded", f"{final}\n{harness.logs()}"
    assert final["output"] == {"slept": 1500}
    assert final["nodes"]["nap"]["attempts"] == 1
    assert await asyncio.to_thread(proc.wait, 15) == 0, harness.logs()
    assert "in_flight=1" in harness.logs() and "handed_back=0" in harness.logs()


async def test_sigterm_hands_back_what_outlives_the_grace_period(
    harness: Harness, node: str
) -> None:
    await start(harness, napping)
    # A 30 s ack wait: were the task not nak'ed on the way out, the next worker would only get it
    # once that ran out.
    env = {"CONVEYOR_TASK_ACK_WAIT": "30", "WORKER_GRACE": "0.2"}
    slow = spawn_node(harness, node, "--input-type=module", "-e", NAP_WORKER, env=env)
    run_id = await harness.client.trigger("napping", {"ms": 60_000})
    await _until_running(harness, run_id)
    slow.terminate()
    assert await asyncio.to_thread(slow.wait, 15) == 0, harness.logs()
    assert "handed_back=1" in harness.logs()
    # Another worker takes it at once: the same attempt, delivered a second time.
    spawn_node(
        harness, node, "--input-type=module", "-e", NAP_WORKER, env={**env, "NAP_FACTOR": "0"}
    )
    final = await _wait(harness, run_id, timeout=15)
    assert final["status"] == "succeeded", f"{final}\n{harness.logs()}"
    assert final["output"] == {"slept": 60_000}
    assert final["nodes"]["nap"]["attempts"] == 1


def test_crc32_partitioning_matches_python(node: str) -> None:
    run_ids = ["r1", "0190abcdef0123456789abcdef", "d" + "f" * 31, "Ünïcødé-東京"]
    script = (
        'import { crc32, partitionOf } from "./worker.mjs";'
        f"for (const id of {json.dumps(run_ids)}) console.log(crc32(id), partitionOf(id, 7));"
    )
    expected = [f"{zlib.crc32(r.encode())} {zlib.crc32(r.encode()) % 7}" for r in run_ids]
    assert _node_lines(node, script) == expected


def test_the_event_key_matches_python(node: str) -> None:
    """Nats-Msg-Id is a function of the event's source and id, the same in every language."""
    pairs = [["conveyor/worker/w1", "r1:a:1:completed"], ["shop", "Ünïcødé-東京"], ["a", ""]]
    script = (
        'import { eventKey } from "./worker.mjs";'
        f"for (const [s, i] of {json.dumps(pairs)}) console.log(eventKey(s, i));"
    )
    assert _node_lines(node, script) == [event_key(s, i) for s, i in pairs]


def _node_lines(node: str, script: str) -> list[str]:
    """The lines a module script prints, run by node beside the example worker."""
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=NODE_WORKER,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split("\n")[:-1]


# ---- heartbeats and the crash rule, in Node --------------------------------------------------

# A Node worker whose only task notes when each run begins and ends (and on which delivery).
NOTE_WORKER = """
import { appendFileSync } from "node:fs";
import { serve } from "./worker.mjs";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
await serve({ nap: { params: { ms: "number" }, fn: async ({ ms }) => {
  appendFileSync(process.env.NOTES, `begin ${ms}\\n`);
  await sleep(ms);
  appendFileSync(process.env.NOTES, `end ${ms}\\n`);
  return { slept: ms };
} } });
process.exit(0);
"""


async def test_the_node_worker_announces_itself_and_says_goodbye(
    harness: Harness, node: str
) -> None:
    from orchestrator.runtime.workers import read_workers

    await start(harness, napping)
    proc = spawn_node(harness, node, "--input-type=module", "-e", NAP_WORKER)

    async def live() -> list[Any]:
        return [w for w in await read_workers(harness.client.bus) if w.heartbeat.pid == proc.pid]

    [info] = await eventually(live, message="the Node worker's heartbeat")
    assert info.live, harness.logs()
    beat = info.heartbeat
    assert [(s.queue, s.task) for s in beat.serves] == [("node", "nap")]
    assert beat.version.startswith("conveyor-node-example ")
    assert (beat.concurrency, beat.in_flight, beat.state) == (4, 0, "running")
    proc.terminate()
    assert await asyncio.to_thread(proc.wait, 15) == 0, harness.logs()
    [last] = await live()
    assert (last.heartbeat.state, last.live) == ("stopped", False)


async def test_the_node_worker_runs_a_suspect_alone(harness: Harness, node: str) -> None:
    await start(harness, napping)
    suspect = await harness.client.trigger("napping", {"ms": 700})
    # Play a worker that took it and died: take it and hand it back.
    puller = await harness.client.bus.task_puller("node", "nap")
    [delivery] = await eventually(lambda: puller.fetch(1, timeout=1.0), message="the dispatch")
    await delivery.settle(Outcome.SHUTDOWN)
    await puller.close()
    others = [await harness.client.trigger("napping", {"ms": ms}) for ms in (300, 400)]
    notes = harness.workdir / "notes.log"
    spawn_node(harness, node, "--input-type=module", "-e", NOTE_WORKER, env={"NOTES": str(notes)})
    finals = [await _wait(harness, run_id, timeout=30) for run_id in [suspect, *others]]
    assert [f["output"] for f in finals] == [{"slept": 700}, {"slept": 300}, {"slept": 400}]
    lines = notes.read_text().split("\n")[:-1]
    begin = lines.index("begin 700")
    assert lines[begin + 1] == "end 700", lines  # nothing else ran while the suspect did
