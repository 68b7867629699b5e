"""The dashboard says why a run waits behind a limit (docs/flow-control.md): the run header and
the node panel show the limit, the key and the place in line; the run starts once let in."""

from __future__ import annotations

from playwright.async_api import Page, expect

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
