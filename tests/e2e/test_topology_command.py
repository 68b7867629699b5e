"""`conveyor topology apply` on a single server: a refusal no wait can cure ends it at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from events.server import EmbeddedServer


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
