"""Shared fixtures: one real nats-server per session (see events.testing); and the order in
which `--dist loadfile` hands the test files to the processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from events import EmbeddedServer
from events.testing import bus, topology  # noqa: F401  (pytest fixtures)

# The longest files, longest first (seconds each in a four-process run on two cores, measured
# with --durations=0 and summed per file). A process runs one file at a time, so a long file
# handed out last would keep the run going on its own after every other process has finished:
# these start first and the many short files fill in around them. A file missing here (a new
# one) only runs in collection order after these; none is ever left out.
LONGEST_FIRST = (
    "tests/deploy/test_containers.py",  # ~185: images built, compose up
    "tests/e2e/test_bench_smoke.py",  # ~180: `python -m bench --quick`
    "tests/cluster/test_failover.py",  # ~130
    "tests/e2e/test_cli.py",  # ~130
    "tests/api/test_api.py",  # ~95
    "tests/integration/test_flow_control.py",  # ~70
    "tests/integration/test_gateway_edges.py",  # ~65
    "tests/e2e/test_cli_first_use.py",  # ~60
    "tests/e2e/test_supervision.py",  # ~55
    "tests/cluster/test_cluster.py",  # ~55
    "tests/integration/test_triggers.py",  # ~50
    "tests/browser/test_dashboard.py",  # ~45
    "tests/browser/test_run_page.py",  # ~40
    "tests/integration/test_webhooks.py",  # ~40
    "tests/integration/test_runs.py",  # ~35
    "tests/integration/test_crashes.py",  # ~35
    "tests/integration/test_containment.py",  # ~30
    "tests/integration/test_flow_lease.py",  # ~30
    "tests/api/test_auth.py",  # ~30
    "tests/integration/test_routing.py",  # ~30
    "tests/integration/test_polyglot.py",  # ~25
    "tests/test_quality.py",  # ~20, mypy and ruff on every file
)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedServer]:
    """events.testing's session server, ended with kill -9 rather than SIGTERM: by then it holds
    every test's streams (thousands), and its graceful stop took most of the 15-18 s that the
    last test's teardown took in each process. Its store is thrown away either way."""
    server = EmbeddedServer().start()
    try:
        yield server
    finally:
        server.kill()
        server.stop()  # removes its temporary store


def pytest_configure(config: pytest.Config) -> None:
    # xdist's loadfile hands out the files with the most tests first, by default: our longest
    # files have few tests (one bench run, one container stack), so they went last. Keep the
    # order below instead (the controller reads this option; the processes order the items).
    if getattr(config.option, "dist", "no") == "loadfile":
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):
        return  # not an xdist process: a plain run keeps pytest's own order
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    # A stable sort: every file's tests stay together and in their own order.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
