"""Every long-running part is supervised: a process never lingers half-alive.

Real `conveyor` processes against a real nats-server: a process whose component fails exits
non-zero (so its own supervisor restarts it), a start-up that cannot succeed ends in bounded
time, a connection the server closes ends the process, and `conveyor dev` takes its embedded
nats-server with it even when killed with -9.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from events import Bus, EmbeddedServer, Topology
from events.envelope import CloudEvent
from events.server import port_is_free
from events.testing import eventually, unique_namespace
from orchestrator.runtime.supervisor import ConnectionWatch, Supervisor
from tests.integration.harness import Harness
from tests.integration.trigger_flows import hourly

ROOT = Path(__file__).resolve().parents[2]
NOTIFYING = """
from orchestrator import workflow
from workers import task

@task
def hello(name: str = "x") -> str:
    return name

@workflow(notify={"url": "http://127.0.0.1:9/hook", "secret": "env:CONVEYOR_TEST_UNSET_SECRET"})
def signed(name: str = "x") -> str:
    return hello(name)
"""


async def _exit_code(proc: subprocess.Popen[bytes], within: float) -> int:
    try:
        return await asyncio.to_thread(proc.wait, within)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the process did not exit within {within}s") from None


async def test_orchestrator_without_jetstream_exits_non_zero_in_bounded_time(
    tmp_path: Path,
) -> None:
    with EmbeddedServer(store_dir=tmp_path / "nats", jetstream=False) as server:
        started = time.monotonic()
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "orchestrator.cli", "orchestrator", "--db", "x.db"],
            env={**os.environ, "CONVEYOR_NATS_URL": server.url, "CONVEYOR_NAMESPACE": "nojs"},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert "has JetStream disabled" in result.stderr, result.stderr


async def test_a_router_whose_store_fails_ends_the_process(harness: Harness) -> None:
    proc = harness.spawn_orchestrator()
    await eventually(
        lambda: _status_api_up(harness), timeout=30, message="the orchestrator's status API"
    )
    with sqlite3.connect(harness.db) as db:  # the store breaks under the running router
        db.execute("DROP TABLE waits")
    event = CloudEvent.create("com.example.ping", "tests", {"n": 1})
    await harness.client.bus.publish(harness.topology.ingest_subject(event.type), event)
    assert await _exit_code(proc, 30) == 1
    logs = harness.logs()
    assert "component ended unexpectedly" in logs and "router-p0" in logs
    assert "no such table: waits" in logs


async def test_a_scheduler_whose_store_fails_ends_the_process(harness: Harness) -> None:
    await harness.register(hourly)
    with sqlite3.connect(harness.db) as db:  # created before the orchestrator opens it
        db.execute("CREATE TABLE schedule_cursors (unrelated TEXT)")
    proc = harness.spawn_orchestrator()
    assert await _exit_code(proc, 30) == 1
    logs = harness.logs()
    assert "component ended unexpectedly" in logs and "scheduler" in logs


async def test_a_notifier_whose_secret_is_missing_refuses_to_start(
    harness: Harness, tmp_path: Path
) -> None:
    module = tmp_path / "signed.py"
    module.write_text(NOTIFYING)
    register = harness.spawn("register", str(module))
    assert await _exit_code(register, 60) == 0
    env_backup = os.environ.pop("CONVEYOR_TEST_UNSET_SECRET", None)
    assert env_backup is None
    proc = harness.spawn_orchestrator()
    assert await _exit_code(proc, 30) != 0
    logs = harness.logs()
    assert "environment variable CONVEYOR_TEST_UNSET_SECRET is not set" in logs
    assert "workflow 'signed'" in logs


async def test_a_connection_the_server_closes_ends_the_process(
    nats_server: EmbeddedServer,
) -> None:
    bus = await Bus.connect(nats_server.url, Topology(namespace=unique_namespace("close")))
    supervisor = Supervisor([ConnectionWatch(bus)], handle_signals=False)
    serving = asyncio.create_task(supervisor.serve())
    await asyncio.sleep(0)
    # Headers plus body over the server's max payload: nats-py only checks the body, the
    # server answers with -ERR and closes the connection, and nats-py does not reconnect.
    body = b"x" * (bus.max_payload - 10)
    await bus.nc.publish("anything", body, headers={"filler": "y" * 200})
    code = await asyncio.wait_for(serving, 20)
    assert code == 1
    assert any("nats-connection" in f and "closed" in f for f in supervisor.failures)
    await bus.close()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_kill_9_of_dev_leaves_no_nats_server_behind(tmp_path: Path) -> None:
    port = _free_port()
    flows = ROOT / "examples" / "hello.py"
    home = str(tmp_path / "home")
    command = [sys.executable, "-m", "orchestrator.cli", "dev", str(flows), "--port", str(port)]
    dev = subprocess.Popen(
        [*command, "--api-port", "0", "--home", home],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        assert dev.stderr is not None
        seen = b""
        while b"conveyor dev: NATS at" not in seen:
            line = await asyncio.wait_for(asyncio.to_thread(dev.stderr.readline), 60)
            assert line, f"dev ended before it was ready: {seen!r}"
            seen += line
        servers = [c for c in _children(dev.pid) if "nats-server" in _cmdline(c)]
        assert len(servers) == 1
        os.kill(dev.pid, signal.SIGKILL)
        dev.wait(10)
        await eventually(
            lambda: _gone(servers[0]), timeout=10, message="the nats-server to die with dev"
        )
        # The next `conveyor dev` can start on it. (Eventually: with other test processes
        # running, an outgoing connection may hold the number as its ephemeral port a moment.)
        await eventually(
            lambda: _free(port), timeout=10, message=f"port {port} free after dev was killed"
        )
    finally:
        if dev.poll() is None:
            dev.kill()
        if dev.stderr is not None:
            dev.stderr.close()


async def _free(port: int) -> bool:
    return port_is_free(port)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return state == "Z"  # a zombie holds no port: it is dead, only not yet reaped


async def _status_api_up(harness: Harness) -> bool:
    try:
        await harness.client.status("probe")
    except Exception:
        return False
    return True
