"""The Workers page in headless Chromium: two real workers serving different tasks, then one of
them stopped — shown gone, and the workflows whose tasks only it served flagged; the queues'
backlogs beside them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest_asyncio
from playwright.async_api import Page, expect

from tests.api import flows
from tests.api.support import ApiEnv, serving
from tests.browser.support import shoot, sign_in
from tests.integration.harness import Harness

WAIT_MS = 30_000
REPORT_TASKS = [flows.fetch, flows.enrich, flows.audit, flows.summarise, flows.publish]


@pytest_asyncio.fixture
async def two_workers(harness: Harness) -> AsyncIterator[ApiEnv]:
    """The orchestrator, one worker for `report`'s tasks, another for `broken`'s, the API."""
    await harness.start_orchestrator()
    await harness.start_worker(REPORT_TASKS, name="reports-worker")
    await harness.start_worker([flows.explode], name="errors-worker", concurrency=4)
    await harness.register(flows.report, flows.broken, flows.slow)
    async with serving(harness) as env:
        yield env


async def test_two_workers_then_one_stopped_is_shown_gone(two_workers: ApiEnv, page: Page) -> None:
    api = two_workers
    await api.wait(await api.trigger("report", {"rows": 3}))
    await sign_in(page)
    await page.goto(f"{api.url}/#/workers")
    rows = page.locator("#workers-card tbody tr")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    reports = page.locator("tr[data-worker='reports-worker']")
    errors = page.locator("tr[data-worker='errors-worker']")
    for row in (reports, errors):
        await expect(row).to_have_attribute("data-status", "alive")
    await expect(reports.locator(".worker-tasks")).to_have_text(
        "audit, enrich, fetch, publish, summarise"
    )
    await expect(errors.locator(".worker-tasks")).to_have_text("explode")
    await expect(errors.locator("td.num")).to_have_text("0 / 4")
    await expect(page.locator(".workers-alive")).to_have_text("2 alive")
    # `slow` needs wait_for, which neither serves: its runs would wait.
    warnings = page.locator(".unserved")
    await expect(warnings).to_have_count(1)
    await expect(page.locator(".unserved[data-workflow='slow']")).to_contain_text(
        "wait_for (queue default)"
    )
    # The queues: one consumer per task of a registered workflow (registering creates them, so
    # wait_for has one though no worker serves it), each with its backlog.
    queues = page.locator("#queues-card tbody tr")
    await expect(queues).to_have_count(7)  # 5 of report's tasks, explode, wait_for
    await expect(queues.filter(has_text="wait_for")).to_have_count(1)
    await expect(page.locator("#queues-card")).to_contain_text("dead letters")
    await shoot(page, "18-workers-two-alive")

    await api.harness.stop_worker(api.harness.workers[1])
    await expect(errors).to_have_attribute("data-status", "gone", timeout=WAIT_MS)
    await expect(errors.locator(".worker-why")).to_have_text("stopped")
    await expect(reports).to_have_attribute("data-status", "alive")
    await expect(page.locator(".workers-alive")).to_have_text("1 alive")
    # The live worker is listed first; `broken` now has nobody to run explode.
    await expect(rows.first).to_have_attribute("data-worker", "reports-worker")
    await expect(page.locator(".unserved[data-workflow='broken']")).to_contain_text(
        "explode (queue default)", timeout=WAIT_MS
    )
    await expect(warnings).to_have_count(2)
    assert re.match(r"^\d{4}-\d\d-\d\d ", await errors.locator("time").first.inner_text())
    await shoot(page, "19-workers-one-gone")

    # A run of `broken` now waits for a worker nobody runs: its page says so.
    run_id = await api.trigger("broken", {"reason": "nobody home"})
    await page.goto(f"{api.url}/#/runs/{run_id}")
    node = page.locator(".dag-node[data-node='explode']")
    await expect(node.locator(".sub")).to_have_text("explode · no worker", timeout=WAIT_MS)
    await node.click()
    await expect(page.locator(".panel .form-error")).to_contain_text(
        "no worker has served task 'explode'"
    )
    await shoot(page, "20-run-waiting-for-a-worker")
