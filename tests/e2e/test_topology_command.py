"""What no start-up deadline can cure ends a command at once, with the reason: a refusal of
the topology, a server without JetStream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from events.server import EmbeddedServer
from tests.integration.harness import FLOWS


def test_a_refusal_no_wait_can_cure_fails_at_once_with_the_servers_reason(
    nats_server: EmbeddedServer,
) -> None:
    # Three replicas on one server: JetStream says no. The job waits for a cluster that is still
    # forming, never for this: with a start-up deadline far beyond the command's own timeout,
    # only failing at once can pass.
    env = {
        "PATH": "/usr/bin:/bin",
        "CONVEYOR_NATS_URL": nats_server.url,
        "CONVEYOR_NAMESPACE": "single3",
        "CONVEYOR_REPLICAS": "3",
        "CONVEYOR_STARTUP_TIMEOUT": "3600",
    }
    try:
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "topology", "apply"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("`topology apply` kept asking after a refusal that cannot change")
    assert result.returncode != 0, result.stdout
    assert "cannot create stream SINGLE3_EVENTS" in result.stderr, result.stderr
    assert "replicas > 1 not supported" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "command",
    [("topology", "apply"), ("topology", "check"), ("worker", FLOWS)],
    ids=["apply", "check", "worker"],
)
def test_a_server_without_jetstream_is_named_at_once(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    # "No responders" is also what a forming cluster answers; the server's INFO tells the two
    # apart, so nothing waits its start-up deadline for a JetStream that will never come.
    with EmbeddedServer(store_dir=tmp_path / "nats", jetstream=False) as server:
        env = {
            "PATH": "/usr/bin:/bin",
            "CONVEYOR_NATS_URL": server.url,
            "CONVEYOR_NAMESPACE": "nojs",
            "CONVEYOR_STARTUP_TIMEOUT": "3600",
        }
        try:
            result = subprocess.run(
                [sys.executable, "-m", "orchestrator.cli", *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`conveyor {' '.join(command)}` waited for a JetStream that is off")
    assert result.returncode != 0, result.stdout
    assert "has JetStream disabled" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
