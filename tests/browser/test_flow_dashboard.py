"""The dashboard says why a run waits behind a limit (docs/flow-control.md): the run header and
the node panel show the limit, the key and the place in line; the run starts once let in. The
Flow page lists every limit and debounce at work with its counts per key."""

from __future__ import annotations

from playwright.async_api import Page, expect

from events import CloudEvent
from tests.api import flows
from tests.api.support import ApiEnv
from tests.browser.support import shoot, sign_in

WAIT_MS = 30_000


async def test_a_queued_run_shows_the_limit_it_waits_behind(api: ApiEnv, page: Page) -> None:
    await api.harness.register(flows.one_at_a_time)
    ahead = await api.trigger("one_at_a_time", {"seconds": 120})
    await api.wait_node(ahead, "wait_for", "running")
    behind = await api.trigger("one_at_a_time", {"seconds": 0.01})
    await api.wait(behind, {"queued"})

    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{behind}")
    await expect(page.locator(".run-title .pill")).to_have_text("queued", timeout=WAIT_MS)
    line = page.locator(".run-head .flow-wait")
    await expect(line).to_contain_text("Queued behind the run concurrency limit 1")
    await expect(line).to_contain_text("#1 in line")
    await expect(line).to_contain_text("1 of 1 running")
    await shoot(page, "20-queued-behind-a-limit")

    await api.http.post(f"/api/runs/{ahead}/cancel")
    await expect(page.locator(".run-title .pill")).to_have_text("succeeded", timeout=WAIT_MS)
    await expect(page.locator(".run-head .flow-wait")).to_have_count(0)


async def test_the_flow_page_shows_each_limit_and_debounce_with_its_counts_per_key(
    api: ApiEnv, page: Page
) -> None:
    await api.harness.start_router()
    await api.harness.register(flows.one_at_a_time, flows.settle_readings)
    ahead = await api.trigger("one_at_a_time", {"seconds": 120})
    await api.wait_node(ahead, "wait_for", "running")
    behind = await api.trigger("one_at_a_time", {"seconds": 0.01})
    await api.wait(behind, {"queued"})
    bus = api.harness.client.bus
    for n in range(3):
        reading = CloudEvent.create("com.example.reading", "test", {"n": n}, subject="sensor-7")
        await bus.publish(bus.topology.ingest_subject(reading.type), reading)

    await sign_in(page)
    await page.goto(f"{api.url}/#/flow")
    limit = page.locator(".flow-limits tr[data-name='one_at_a_time']")
    await expect(limit).to_contain_text("run concurrency 1", timeout=WAIT_MS)
    await expect(limit).to_contain_text("1 of 1")
    await expect(limit.locator("td").nth(4)).to_have_text("1")  # queued
    debounce = page.locator(".flow-collectors tr[data-workflow='settle_readings']")
    await expect(debounce).to_contain_text("debouncing", timeout=WAIT_MS)
    await expect(debounce).to_contain_text("sensor-7")
    await expect(debounce.locator("td").nth(3)).to_have_text("3")  # events held
    await shoot(page, "21-flow-page")

    # The page follows: the run ahead cancelled, the queue drains and its row goes.
    await api.http.post(f"/api/runs/{ahead}/cancel")
    await api.wait(behind)
    await expect(limit).to_have_count(0, timeout=WAIT_MS)
