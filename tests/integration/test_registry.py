"""Workflow specs in the KV bucket: a burst of lookups costs one read, a new version is seen at
once by the process that registered it, and a run pins the version its input was checked
against."""

from __future__ import annotations

import asyncio
from typing import Any

from events import Bus
from events.testing import eventually
from orchestrator.runtime.registry import Registry
from tests.integration import flows
from tests.integration.harness import Harness


async def test_a_burst_of_lookups_is_one_kv_read(bus: Bus) -> None:
    await Registry(bus).register(flows.chain.spec)
    reads: list[str] = []
    real_get = bus.kv_get

    async def counted(bucket: str, key: str) -> Any:
        reads.append(key)
        return await real_get(bucket, key)

    bus.kv_get = counted  # type: ignore[method-assign]  # counts, then does the real read
    registry = Registry(bus)
    versions = await asyncio.gather(*(registry.latest_version("chain") for _ in range(500)))
    assert set(versions) == {1}
    assert reads == ["wf.chain.latest"]
    specs = await asyncio.gather(*(registry.get("chain") for _ in range(100)))
    assert {s.version for s in specs} == {1}
    assert reads.count("wf.chain.latest") == 1


async def test_a_new_version_is_seen_at_once_where_it_was_registered(bus: Bus) -> None:
    registry = Registry(bus, latest_ttl_s=60)
    await registry.register(flows.chain.spec)
    assert await registry.latest_version("chain") == 1
    changed = flows.chain.spec.model_copy(update={"description": "a second version"})
    await registry.register(changed)
    assert await registry.latest_version("chain") == 2  # not the cached 1
    elsewhere = Registry(bus, latest_ttl_s=0.2)
    assert await elsewhere.latest_version("chain") == 2


async def test_a_run_pins_the_version_its_input_was_checked_against(harness: Harness) -> None:
    await harness.start_orchestrator()
    await harness.start_worker([flows.inc])
    await harness.register(flows.chain)
    first = await harness.run(flows.chain, {"start": 1})
    assert first["version"] == 1
    changed = flows.chain.spec.model_copy(update={"description": "v2"})
    await Registry(harness.client.bus).register(changed)

    async def on_v2() -> bool:
        run_id = await harness.client.trigger("chain", {"start": 1})
        final = await harness.client.wait(run_id, timeout=30)
        return final["version"] == 2

    await eventually(on_v2, timeout=10, message="a run on the new version")
