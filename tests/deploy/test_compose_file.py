"""deploy/compose.yaml read as data: what test_containers.py runs, checked without containers
(so it holds even where podman cannot start one)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from .cli import refusal
from .containers import COMPOSE_FILE, DEPLOY, NATS_NODES, SERVICES

CONVEYOR_ROLES = ("topology", "orchestrator", "worker", "api", "webhooks")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def default(value: str) -> str:
    """The value compose uses when the variable is unset: `${NAME:-default}` -> default."""
    return re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", value)


def test_the_services_are_the_ones_the_tests_tear_down() -> None:
    assert set(compose()["services"]) == set(SERVICES)
    assert {f"nats{i}" for i in (1, 2, 3)} == set(NATS_NODES.values())


def test_every_conveyor_process_gets_the_cluster_settings() -> None:
    services = compose()["services"]
    for role in CONVEYOR_ROLES:
        env = services[role]["environment"]
        seeds = default(env["CONVEYOR_NATS_URL"]).split(",")
        assert seeds == [f"nats://{node}:4222" for node in NATS_NODES.values()], role
        assert env["CONVEYOR_REPLICAS"] == "3", role
        assert services[role]["read_only"] is True, role
        assert "/tmp" in services[role]["tmpfs"], role


def test_every_command_line_is_one_conveyor_accepts() -> None:
    services = compose()["services"]
    for role in CONVEYOR_ROLES:
        assert refusal(services[role]["command"]) is None
    assert services["topology"]["command"] == ["topology", "apply"]
    # The example worker image's default command, for `docker run IMAGE`.
    containerfile = (DEPLOY / "examples" / "worker" / "Containerfile").read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", containerfile, re.MULTILINE)
    assert refusal(yaml.safe_load(cmd)) is None


def test_the_nats_nodes_route_to_each_other() -> None:
    config = (DEPLOY / "nats" / "cluster.conf").read_text()
    [routes] = re.findall(r"routes: \[(.*)\]", config)
    expected = [f"nats://{node}:6222" for node in NATS_NODES.values()]
    assert [r.strip() for r in routes.split(",")] == expected
    services = compose()["services"]
    names = [services[node]["environment"]["NATS_SERVER_NAME"] for node in NATS_NODES.values()]
    assert names == list(NATS_NODES)
