"""`conveyor topology apply` as compose and the Helm hook start it: beside a cluster that is not
up yet. It waits (up to CONVEYOR_STARTUP_TIMEOUT) for a server to accept it and for JetStream to
answer, instead of exiting while the cluster forms and leaving every other process waiting for a
topology that never comes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from events.bus import Bus
from events.cluster import LocalCluster
from events.testing import unique_namespace
from events.topology import Topology

pytestmark = pytest.mark.timeout(300)


async def test_topology_apply_started_before_the_cluster_waits_for_it(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    topology = Topology(namespace=unique_namespace("tj"), replicas=3)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "CONVEYOR_NATS_URL": cluster.url,
        "CONVEYOR_NAMESPACE": topology.namespace,
        "CONVEYOR_REPLICAS": "3",
        "CONVEYOR_STARTUP_TIMEOUT": "120",
    }
    # The first node's client port answers before any server runs: accepting the job's first
    # connection proves it started before the cluster (no sleep needed to arrange the order).
    first_port = cluster.client_ports[cluster.names[0]]
    with socket.create_server(("127.0.0.1", first_port)) as early:
        job = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "topology", "apply"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        early.settimeout(60)
        try:
            connection, _ = early.accept()
        except TimeoutError:
            job.kill()
            raise AssertionError(f"the job never tried to connect: {job.communicate()}") from None
        connection.close()  # refused mid-handshake, as a server that is still starting does
    try:
        cluster.start()  # the nodes, not waiting for the job: it may meet a meta election
        stdout, stderr = await asyncio.to_thread(job.communicate, timeout=150)
        assert job.returncode == 0, f"topology apply exited {job.returncode}:\n{stderr}"
        assert "replicas 3" in stdout, stdout
        bus = await Bus.connect(cluster.url, topology, name="topology-job-test")
        try:
            assert await bus.missing_topology() == []
            for plan in topology.streams():
                replicas, _ = await bus.stream_replicas(plan.name)
                assert (plan.name, replicas) == (plan.name, 3)
        finally:
            await bus.close()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        cluster.stop()
