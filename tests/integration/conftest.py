from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from events import EmbeddedServer, Topology
from tests.integration.harness import Harness


@pytest_asyncio.fixture
async def harness(
    nats_server: EmbeddedServer, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    h = await Harness(nats_server, topology, tmp_path).open()
    try:
        yield h
    finally:
        await h.close()
