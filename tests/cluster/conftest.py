"""A real 3-node JetStream cluster per test module, and Conveyor processes on it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from events.bus import Bus
from events.cluster import LocalCluster
from events.testing import unique_namespace
from events.topology import Topology
from tests.processes import process_logs, stop_processes

FLOWS = str(Path(__file__).with_name("flows.py"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


class Deployment:
    """Conveyor on the cluster as the compose file runs it: a topology job, then processes
    with CONVEYOR_REPLICAS=3 and the seed list of all three servers."""

    def __init__(self, cluster: LocalCluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.topology = Topology(namespace=unique_namespace("cl"), replicas=3, task_ack_wait_s=3.0)
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
            "CONVEYOR_NATS_URL": self.cluster.url,
            "CONVEYOR_NAMESPACE": self.topology.namespace,
            "CONVEYOR_REPLICAS": "3",
            "CONVEYOR_PARTITIONS": str(self.topology.partitions),
            "CONVEYOR_TASK_ACK_WAIT": str(self.topology.task_ack_wait_s),
            "CONVEYOR_TEST_DIR": str(self.workdir),
        }

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"proc-{len(self.processes)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "--log-level", "info", *args],
                env={**self.env(), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(proc)
        return proc

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    async def bus(self) -> Bus:
        return await Bus.connect(self.cluster.url, self.topology, name="cluster-test")

    def logs(self) -> str:
        return process_logs(self.workdir, 4000)

    async def close(self) -> None:
        await stop_processes(self.processes, 30)


@pytest_asyncio.fixture
async def deployment(cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[Deployment]:
    for name, node in cluster.nodes.items():  # a previous test may have left a node down
        if node.proc is None:
            cluster.restart(name)
    cluster.wait_for_meta_leader()
    deployed = Deployment(cluster, tmp_path)
    try:
        yield deployed
    finally:
        await deployed.close()
