"""`conveyor orchestrator --lease` as a process: bad settings are refused before anything starts,
and a replica that cannot write to the leases bucket for its rejoin timeout exits non-zero (so
that its supervisor starts a fresh one) instead of waiting for ever."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from events import EmbeddedServer, Topology
from events.bus import Bus
from events.errors import BusError
from events.testing import eventually, unique_namespace
from orchestrator.runtime.leases import Table

ROOT = Path(__file__).resolve().parents[2]


def _conveyor(
    *args: str, url: str = "nats://127.0.0.1:1", namespace: str = "lease", log: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({"CONVEYOR_NATS_URL": url, "CONVEYOR_NAMESPACE": namespace})
    output = open(log, "wb") if log is not None else subprocess.PIPE  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "--log-level", "info", *args],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    finally:
        if log is not None:
            output.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--lease-seconds", "0.5"], "--lease-seconds must be a finite number of seconds"),
        (["--lease-seconds", "nan"], "--lease-seconds must be a finite number of seconds"),
        (["--snapshot-interval", "0"], "--snapshot-interval must be > 0"),
        (["--lease-seconds", "5", "--rejoin-timeout", "2"], "--rejoin-timeout must be at least"),
        (["--replica-id", "a b"], "--replica-id 'a b' must be 1-64 of"),
        (["--replica-id", "x" * 65], "must be 1-64 of"),
    ],
)
def test_bad_lease_settings_are_refused_before_connecting(flags: list[str], says: str) -> None:
    proc = _conveyor("orchestrator", "--lease", *flags)  # (nothing listens at the URL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output.decode()
    assert says in output.decode()
    assert "Traceback" not in output.decode()


async def _held_by(bus: Bus, replica: str) -> bool:
    try:
        entries = await bus.kv_entries(bus.topology.leases_bucket)
    except BusError:  # (the replica has not applied the topology yet)
        return False
    table = Table.parse({k: (e.value, e.revision) for k, e in entries.items()}, 1)
    return table.owners() == {0: replica}


async def test_a_replica_that_cannot_reach_the_leases_exits_non_zero(tmp_path: Path) -> None:
    namespace = unique_namespace()
    log = tmp_path / "replica.log"
    with EmbeddedServer(store_dir=tmp_path / "store") as server:
        replica = _conveyor(
            "orchestrator",
            "--lease",
            "--replica-id",
            "solo",
            "--state-dir",
            str(tmp_path / "state"),
            "--lease-seconds",
            "1",
            "--rejoin-timeout",
            "3",
            url=server.url,
            namespace=namespace,
            log=log,
        )
        try:
            bus = await Bus.connect(server.url, Topology(namespace=namespace))
            try:
                await eventually(
                    lambda: _held_by(bus, "solo"),
                    timeout=60,
                    message=f"the replica to hold partition 0\n{log.read_text()}",
                )
            finally:
                await bus.close()
        except BaseException:
            replica.kill()
            replica.wait(10)
            raise
    stopped = time.monotonic()  # the server is gone: no heartbeat can be written
    try:
        code = await asyncio.to_thread(replica.wait, 60)
    except subprocess.TimeoutExpired:
        replica.kill()
        raise AssertionError(f"the replica did not exit\n{log.read_text()}") from None
    took = time.monotonic() - stopped
    output = log.read_text()
    assert code != 0, output
    assert "could not write its heartbeat" in output, output
    assert took < 30, f"exited {took:.1f}s after the server stopped"
