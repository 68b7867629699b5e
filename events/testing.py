"""Test helpers for Conveyor and for users testing their own workflows against a real server.

In a conftest.py:

    from events.testing import nats_server, topology, bus  # noqa: F401  (pytest fixtures)

`nats_server` starts one real `nats-server -js` per test session on a free loopback port with a
temporary store; `topology` gives each test its own namespace (own streams, subjects and
buckets) on it, so tests never see each other's messages; `bus` is a connected `Bus`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import pytest_asyncio

from events.bus import Bus
from events.server import EmbeddedServer
from events.topology import Topology

T = TypeVar("T")
_counter = itertools.count()


def unique_namespace(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid() % 10000}x{next(_counter)}"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer() as server:
        yield server


@pytest.fixture
def topology() -> Topology:
    # Short ack wait so redelivery after a killed worker is quick in tests.
    return Topology(namespace=unique_namespace(), task_ack_wait_s=2.0, task_max_deliveries=3)


@pytest_asyncio.fixture
async def bus(nats_server: EmbeddedServer, topology: Topology) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_server.url, topology, name="test")
    await connected.apply_topology()
    try:
        yield connected
    finally:
        await connected.close()


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll `probe` until it returns a truthy value; fail with `message` after `timeout`.

    For state that has no event to await (e.g. a row in another process's database).
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")
