"""A real JetStream cluster of `nats-server` processes on loopback, for tests and benchmarks.

    with LocalCluster(tmp_path) as cluster:         # 3 nodes: n1, n2, n3
        bus = await Bus.connect(cluster.url, ...)   # the seed list of all three
        cluster.kill("n2"); cluster.restart("n2")   # kill -9 a node, bring it back on its store

Every node has fixed client, cluster and monitoring ports (chosen free at creation), its own
store directory and server name, and routes to the other two, as in a real deployment
(`--cluster_name`, `--cluster`, `--routes`, `-n`, `-m`). A node killed with -9 comes back on the
same ports and store. `jsz(node)` reads a node's monitoring endpoint — what KEDA's
`nats-jetstream` scaler reads.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from events.errors import ServerError
from events.server import EmbeddedServer

_META_TIMEOUT_S = 30.0


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LocalCluster:
    def __init__(self, workdir: Path, size: int = 3, name: str = "conveyor") -> None:
        self.workdir = workdir
        self.name = name
        self.names = [f"n{i}" for i in range(1, size + 1)]
        ports = _free_ports(3 * size)
        self.client_ports = dict(zip(self.names, ports[:size], strict=True))
        self.cluster_ports = dict(zip(self.names, ports[size : 2 * size], strict=True))
        self.monitor_ports = dict(zip(self.names, ports[2 * size :], strict=True))
        self.nodes: dict[str, EmbeddedServer] = {n: self._node(n) for n in self.names}

    def _node(self, name: str) -> EmbeddedServer:
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.cluster_ports.values())
        return EmbeddedServer(
            store_dir=self.workdir / name,
            port=self.client_ports[name],
            extra_args=(
                "-n",
                name,
                "--cluster_name",
                self.name,
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_ports[name]}",
                "--routes",
                routes,
                "-m",
                str(self.monitor_ports[name]),
            ),
        )

    @property
    def url(self) -> str:
        """The seed list of every node (what CONVEYOR_NATS_URL holds in a cluster)."""
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports.values())

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes.values():
                node.start()
            self.wait_for_meta_leader()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def kill(self, name: str) -> None:
        """kill -9 one node; its store stays for `restart`."""
        self.nodes[name].kill()

    def restart(self, name: str) -> None:
        self.nodes[name].start()

    def freeze(self, name: str) -> None:
        """SIGSTOP one node: its sockets stay open and it answers nothing, as a machine that
        is gone without a word (powered off, cut off) looks to its clients."""
        self._signal(name, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self._signal(name, signal.SIGCONT)

    def _signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.nodes[name].proc
        if proc is None:
            raise ServerError(f"node {name} is not running")
        proc.send_signal(sig)

    def jsz(self, name: str, **query: str) -> dict[str, Any]:
        """A node's `/jsz` monitoring answer (e.g. `accounts="true", consumers="true"`)."""
        params = "&".join(f"{k}={v}" for k, v in query.items())
        url = f"http://127.0.0.1:{self.monitor_ports[name]}/jsz?{params}"
        with urllib.request.urlopen(url, timeout=5) as response:
            document: dict[str, Any] = json.load(response)
        return document

    def wait_for_meta_leader(self, timeout_s: float = _META_TIMEOUT_S) -> str:
        """Until the JetStream meta group has a leader (streams can be created); its name."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, node in self.nodes.items():
                if node.proc is None:
                    continue
                try:
                    leader = self.jsz(name).get("meta_cluster", {}).get("leader")
                except OSError:
                    continue
                if leader:
                    return str(leader)
            time.sleep(0.1)
        raise ServerError(f"the JetStream cluster elected no meta leader within {timeout_s}s")

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
