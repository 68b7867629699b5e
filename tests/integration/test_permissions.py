"""NATS credentials per role: a real nats-server configured with `conveyor nats-config`'s
authorization block; each role does its job with its own user, and is refused outside it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from events import EmbeddedServer
from events.bus import Bus
from events.envelope import CloudEvent
from events.errors import BusError
from events.models import RUN_SUCCEEDED, RunSucceeded
from events.permissions import ROLES, password_variable
from events.settings import NatsSettings
from events.testing import eventually
from events.topology import Topology
from orchestrator import roles
from orchestrator.client import Client
from orchestrator.runtime.leases import SnapshotRef, snapshot_key
from orchestrator.runtime.ownership import Ownership
from orchestrator.runtime.registry import Registry
from tests.integration import flows

NAMESPACE = "perm"
TOPOLOGY = Topology(namespace=NAMESPACE, task_ack_wait_s=5.0)
PASSWORDS = {role: f"pw-{role}-{os.urandom(4).hex()}" for role in ROLES}


def _settings(server: EmbeddedServer, role: str) -> NatsSettings:
    return NatsSettings(servers=(server.url,), user=f"{NAMESPACE}-{role}", password=PASSWORDS[role])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    workdir = tmp_path_factory.mktemp("secured")
    block = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "nats-config", "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config = workdir / "nats.conf"
    config.write_text(block)
    variables = {password_variable(role): PASSWORDS[role] for role in ROLES}
    os.environ.update(variables)  # nats-server reads the $VARs of the block from its environment
    try:
        with EmbeddedServer(store_dir=workdir / "store", extra_args=("-c", str(config))) as server:
            yield server
    finally:
        for name in variables:
            os.environ.pop(name, None)


@pytest_asyncio.fixture(scope="module")
async def applied(secured: EmbeddedServer) -> AsyncIterator[EmbeddedServer]:
    admin = await Bus.connect(_settings(secured, "admin"), TOPOLOGY)
    await admin.apply_topology()
    await admin.close()
    yield secured


@pytest.mark.parametrize("mode", ["static", "lease"])
async def test_each_role_does_its_job_with_its_own_user(
    applied: EmbeddedServer, tmp_path: Path, mode: str
) -> None:
    os.environ["CONVEYOR_TEST_DIR"] = str(tmp_path)
    processes: list[tuple[roles.Process, asyncio.Task[int]]] = []
    leased: list[Ownership] = []

    async def serve(role: str, build: object) -> None:
        process = roles.Process(
            roles.Common(nats=_settings(applied, role), topology=TOPOLOGY), handle_signals=False
        )
        await process.__aenter__()
        await build(process)  # type: ignore[operator]
        supervisor = process.build_supervisor()
        await supervisor.start()
        processes.append((process, asyncio.create_task(supervisor.serve())))

    async def orchestrator(process: roles.Process) -> None:
        if mode == "lease":  # leases, fences, per-epoch consumers, snapshots
            ownership = await roles.leased_orchestrator(
                process,
                state_dir=tmp_path / "state",
                lease_s=1.0,
                snapshot_interval_s=0.2,
                topology="check",
            )
            leased.append(ownership)
        else:
            await roles.orchestrator(process, db=tmp_path / "o.db", topology="check")

    async def worker(process: roles.Process) -> None:
        runtime = await roles.worker(process, [flows.inc])
        await Registry(runtime.bus).register_all([flows.chain.spec])

    client = await Client.connect(_settings(applied, "client"), TOPOLOGY)
    try:
        await serve("orchestrator", orchestrator)
        await serve("worker", worker)
        run_id = await client.trigger("chain", {"start": 1})
        final = await client.wait(run_id, timeout=60)
        assert final["status"] == "succeeded" and final["output"] == 1 + flows.CHAIN_LENGTH
        for ownership in leased:  # its snapshot went into the object store, and is recorded
            await eventually(
                lambda o=ownership: asyncio.sleep(0, result=o.metrics.snapshots > 0),
                timeout=10,
                message="a snapshot",
            )
            await eventually(
                lambda o=ownership: _only_the_recorded_snapshot_left(o.bus),
                timeout=10,
                message="the older snapshots pruned",
            )
    finally:
        await client.close()
        for process, task in processes:
            assert process.supervisor is not None
            process.supervisor.stop()
            assert await asyncio.wait_for(task, 30) == 0, process.supervisor.failures
            await process.__aexit__(None, None, None)


async def _refused(server: EmbeddedServer, role: str, subject: str, body: bytes) -> str:
    """Publish as `role`; the server's permission error, or '' when it was let through."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        server.url,
        user=f"{NAMESPACE}-{role}",
        password=PASSWORDS[role],
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        await nc.publish(subject, body)
        await nc.flush(timeout=5)
        await eventually(
            lambda: asyncio.sleep(0, result=bool(errors)), timeout=5, message="a permission error"
        )
    finally:
        await nc.close()
    return "; ".join(errors)


async def _only_the_recorded_snapshot_left(bus: Bus) -> bool:
    """The partition's snapshot is recorded, and the ones before it were deleted (with the
    orchestrator's own permissions: listing and deleting objects)."""
    record = await bus.kv_get(TOPOLOGY.leases_bucket, snapshot_key(0))
    if record is None:
        return False
    return await bus.snapshot_names("p0/") == [SnapshotRef.decode(record.value).name]


@pytest.mark.parametrize(
    ("role", "subject"),
    [
        ("worker", f"{NAMESPACE}.evt.0.run.succeeded.r1"),  # a worker cannot end a run
        ("worker", f"{NAMESPACE}.task.default.inc"),  # nor dispatch tasks
        ("gateway", f"{NAMESPACE}.evt.0.run.requested.r1"),  # the gateway only ingests
        ("client", f"{NAMESPACE}.evt.0.task.completed.r1"),  # a client cannot forge results
        ("api", "$JS.API.STREAM.DELETE.PERM_EVENTS"),  # the API cannot touch the topology
        ("worker", "$JS.API.STREAM.CREATE.PERM_X"),
        ("worker", f"{NAMESPACE}.fence.0"),  # only an orchestrator fences a partition
        ("api", "$KV.perm-leases.p.0"),  # nor claims one
        ("client", "$KV.perm-leases.s.0"),  # nor records a snapshot
    ],
)
async def test_a_role_is_refused_outside_its_job(
    applied: EmbeddedServer, role: str, subject: str
) -> None:
    outcome = RunSucceeded(run_id="r1", workflow="chain", version=1, output=0)
    event = CloudEvent.create(RUN_SUCCEEDED, "forged", outcome)
    error = await _refused(applied, role, subject, event.data)
    assert "permissions violation" in error.lower(), error
    assert subject.lower() in error.lower()  # (nats-py lower-cases the message)


async def test_the_gateway_may_ingest_and_nothing_else(applied: EmbeddedServer) -> None:
    bus = await Bus.connect(_settings(applied, "gateway"), TOPOLOGY)
    try:
        event = CloudEvent.create("com.example.ping", "tests", {"n": 1})
        await bus.publish(TOPOLOGY.ingest_subject(event.type), event)
        with pytest.raises(BusError):
            await bus.publish(TOPOLOGY.event_subject(RUN_SUCCEEDED, "r2"), event, timeout=1.0)
    finally:
        await bus.close()


async def test_a_wrong_password_is_a_clear_connection_error(applied: EmbeddedServer) -> None:
    wrong = NatsSettings(servers=(applied.url,), user=f"{NAMESPACE}-worker", password="nope")
    # A process waits its whole start-up deadline for a server that is not there yet, but
    # never for credentials the server refuses: with an hour's deadline, only failing at once
    # ends this within the test's bound.
    async with asyncio.timeout(20):
        with pytest.raises(BusError, match=r"cannot connect to NATS.*[Aa]uthorization"):
            await Bus.connect(wrong, TOPOLOGY, connect_timeout_s=3600.0)
    assert "nope" not in repr(wrong)


def test_the_block_names_every_role_and_holds_no_secret() -> None:
    block = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "nats-config", "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for role in ROLES:
        assert f'user: "{NAMESPACE}-{role}"' in block
        assert f"password: ${password_variable(role)}" in block
    assert all(password not in block for password in PASSWORDS.values())
    assert block.count("allow_responses: true") == 1  # only the orchestrator answers requests
