"""The dashboard in headless Chromium against a real orchestrator, worker and API.

Waits are on what the page shows (Playwright's `expect` retries until its timeout), never on
sleeps. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import pytest
from playwright.async_api import Page, expect

from events.models import LogLine
from orchestrator.core.state import Attempt, NodeState, RunState
from orchestrator.runtime.store import Batch, Store
from tests.api import flows
from tests.api.support import TOKEN, ApiEnv, serving
from tests.browser.support import shoot, sign_in
from tests.integration import flows as integration_flows

WAIT_MS = 30_000


@pytest.fixture
def fetch_gate() -> Iterator[asyncio.Event]:
    """Holds every `fetch` task until set, so a test can see a run midway."""
    gate = asyncio.Event()
    flows.GATES["fetch"] = gate
    try:
        yield gate
    finally:
        gate.set()
        flows.GATES.pop("fetch", None)


async def _publish_log(api: ApiEnv, run_id: str, node_id: str, message: str) -> None:
    # Stands in for the worker's log capture (built separately): the dashboard only reads the
    # log stream, whoever wrote to it.
    line = LogLine(
        run_id=run_id,
        node_id=node_id,
        attempt=1,
        time="2026-01-01T12:00:00.000000Z",
        level="info",
        message=message,
        logger="tests.flows",
    )
    bus = api.harness.client.bus
    await bus.publish_raw(
        bus.topology.log_subject(run_id, node_id), {}, line.model_dump_json().encode()
    )


def _run_id(page: Page) -> str:
    return page.url.split("#/runs/", 1)[1].split("?", 1)[0]


async def test_sign_in_trigger_watch_logs_and_cancel(
    api: ApiEnv, page: Page, fetch_gate: asyncio.Event
) -> None:
    # Sign in: the API refuses the page until it has the token.
    await page.goto(f"{api.url}/")
    dialog = page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    await page.fill("#token-input", "not-the-token")
    await page.click("#token-submit")
    await expect(page.locator("#token-error")).to_have_text("That token was refused.")
    await page.fill("#token-input", TOKEN)
    await page.click("#token-submit")
    await expect(dialog).to_be_hidden()
    await expect(page.locator(".chip[data-status='all'] b")).to_have_text("0")

    # Trigger `report` from its card; the form is prefilled from the input schema's defaults.
    await page.click("nav >> text=Workflows")
    card = page.locator(".wf-card[data-workflow='report']")
    await expect(card).to_be_visible()
    await card.get_by_role("button", name="Trigger").click()
    form = page.locator("#trigger-dialog")
    await expect(form).to_be_visible()
    await expect(form.locator("input[name='rows']")).to_have_value("5")
    await expect(form.locator("input[name='factor']")).to_have_value("3")
    await expect(form.locator("input[name='channel']")).to_have_value("ops")
    await form.locator("input[name='rows']").fill("6")
    await shoot(page, "01-trigger-form")
    await form.get_by_role("button", name="Trigger", exact=True).click()

    # The run page: fetch is held by the gate, so the run is seen live, midway.
    await page.wait_for_url("**/#/runs/*", timeout=WAIT_MS)
    run_id = _run_id(page)
    fetch = page.locator(".dag-node[data-node='fetch']")
    await expect(fetch).to_have_class("dag-node st-running", timeout=WAIT_MS)
    await expect(page.locator(".dag-node[data-node='publish']")).to_have_class(
        "dag-node st-waiting"
    )
    await expect(page.locator(".run-title .pill")).to_have_text("running")

    # Open fetch's logs while it runs; a line written now streams into the panel.
    await fetch.click()
    panel = page.locator(".panel")
    await expect(panel.locator("h2")).to_have_text("fetch")
    await panel.get_by_role("tab", name="Logs").click()
    await expect(panel.locator(".logs")).to_contain_text("No log lines yet")
    await _publish_log(api, run_id, "fetch", "fetched 6 rows from the warehouse")
    await expect(panel.locator(".logs .log-msg")).to_have_text(
        ["fetched 6 rows from the warehouse"], timeout=WAIT_MS
    )
    await shoot(page, "02-run-in-progress-with-logs")

    # Release fetch: every node turns green without a reload; the mapped node shows 6/6.
    fetch_gate.set()
    for node in ("fetch", "enrich", "audit", "summarise", "publish"):
        await expect(page.locator(f".dag-node[data-node='{node}']")).to_have_class(
            "dag-node st-succeeded" if node != "fetch" else "dag-node st-succeeded selected",
            timeout=WAIT_MS,
        )
    await expect(page.locator(".dag-node[data-node='enrich'] .count")).to_have_text("6/6")
    await expect(page.locator(".run-title .pill")).to_have_text("succeeded")
    # And the line the task itself logged, captured by the worker, streams in after ours.
    await expect(panel.locator(".logs .log-msg")).to_have_text(
        ["fetched 6 rows from the warehouse", "fetched 6 rows"], timeout=WAIT_MS
    )
    await expect(panel.locator(".logs .log-level").last).to_have_text("warning")
    await panel.get_by_role("tab", name="Details").click()
    await expect(panel.locator("pre.json").last).to_contain_text("5")
    await expect(panel.locator(".attempts tbody tr")).to_have_count(1)
    await shoot(page, "03-run-succeeded")

    # Cancel another run, triggered from the top bar's dialog.
    await page.click("#trigger-open")
    await expect(form).to_be_visible()
    await form.locator("#trigger-workflow").select_option("slow")
    await expect(form.locator("input[name='seconds']")).to_have_value("120")
    await form.get_by_role("button", name="Trigger", exact=True).click()
    await page.wait_for_url(lambda url: run_id not in url and "#/runs/" in url, timeout=WAIT_MS)
    slow_id = _run_id(page)
    await expect(page.locator(".dag-node[data-node='wait_for']")).to_have_class(
        "dag-node st-running", timeout=WAIT_MS
    )
    await page.click("#cancel-run")
    await expect(page.locator("#confirm-dialog")).to_be_visible()
    await page.click("#confirm-yes")
    await expect(page.locator(".run-title .pill")).to_have_text("cancelled", timeout=WAIT_MS)
    await expect(page.locator(".dag-node[data-node='wait_for']")).to_have_class(
        "dag-node st-cancelled"
    )
    await expect(page.locator("#cancel-run")).to_have_count(0)
    await expect(page.locator("#retry-run")).to_be_visible()
    await shoot(page, "04-run-cancelled")
    assert (await api.run(slow_id) or {}).get("status") == "cancelled"

    # The runs list shows both, and a run triggered elsewhere appears live.
    await page.click("nav >> text=Runs")
    rows = page.locator(".runs-table tbody tr")
    await expect(rows).to_have_count(2)
    await expect(page.locator(f"tr[data-run='{run_id}'] .pill")).to_have_text("succeeded")
    await expect(page.locator(f"tr[data-run='{slow_id}'] .pill")).to_have_text("cancelled")
    other = await api.trigger("broken", {"reason": "arrived while watching"})
    await expect(page.locator(f"tr[data-run='{other}'] .pill")).to_have_text(
        "failed", timeout=WAIT_MS
    )
    await expect(page.locator(".chip[data-status='all'] b")).to_have_text("3", timeout=WAIT_MS)
    await shoot(page, "05-runs-list")


async def test_failed_run_shows_its_error_and_retries(api: ApiEnv, page: Page) -> None:
    run_id = await api.trigger("broken", {"reason": "the input file is empty"})
    await api.wait(run_id)
    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{run_id}")
    await expect(page.locator(".run-title .pill")).to_have_text("failed", timeout=WAIT_MS)
    await expect(page.locator(".run-error, .error-box").first).to_contain_text(
        "NonRetryableError: cannot continue: the input file is empty"
    )
    await page.click(".dag-node[data-node='explode']")
    panel = page.locator(".panel")
    await expect(panel.locator("pre.trace")).to_contain_text("Traceback (most recent call last)")
    await expect(panel.locator("pre.trace")).to_contain_text("raise NonRetryableError")
    await expect(panel.locator(".attempts tbody tr")).to_have_count(1)
    await shoot(page, "06-failed-run")

    await expect(panel.locator(".node-attempts")).to_have_text("1 of max 3")

    await page.click("#retry-run")
    # The retried attempt fails again: the attempts table gains a row, live.
    await expect(panel.locator(".attempts tbody tr")).to_have_count(2, timeout=WAIT_MS)
    await expect(page.locator(".run-title .pill")).to_have_text("failed", timeout=WAIT_MS)
    # The retry budget starts over (as `conveyor status` counts it), and the run's duration is
    # its active time, the wait before the retry not counted.
    await expect(panel.locator(".node-attempts")).to_have_text(
        "1 of max 3 since the run's retry (2 in all)", timeout=WAIT_MS
    )
    await expect(page.locator("#run-duration")).to_have_attribute(
        "title", re.compile("^Active time")
    )


async def test_workflow_page_shows_schedules_and_triggers(api: ApiEnv, page: Page) -> None:
    await sign_in(page)
    await page.goto(f"{api.url}/#/workflows")
    card = page.locator(".wf-card[data-workflow='nightly']")
    await expect(card.locator(".tag").first).to_contain_text("next run in")
    await expect(card).to_contain_text("1 event trigger")
    await card.click()
    await expect(page.locator(".dag-node[data-node='sleep'] .sub")).to_have_text("sleep 30s")
    triggers = page.locator(".card", has=page.locator("h2", has_text="Triggers"))
    await expect(triggers).to_contain_text("0 3 * * *")
    await expect(triggers).to_contain_text("Europe/Paris")
    await expect(triggers).to_contain_text("com.example.data.arrived")
    await expect(triggers).to_contain_text("https://hooks.example.com/conveyor")
    await expect(triggers).not_to_contain_text("s3cr3t")
    await shoot(page, "09-workflow-triggers")


async def test_workflow_page_draws_the_dag_with_its_input(api: ApiEnv, page: Page) -> None:
    await sign_in(page)
    await page.goto(f"{api.url}/#/workflows/report")
    await expect(page.locator(".dag-node")).to_have_count(5)
    await expect(page.locator(".dag-edge")).to_have_count(5)
    # Layered: each node's column follows its depth (fetch, then enrich/audit, ...).
    xs = await page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.dag-node')].map(
            (g) => [g.dataset.node, g.transform.baseVal.consolidate().matrix.e]))"""
    )
    assert xs["fetch"] < xs["enrich"] == xs["audit"] < xs["summarise"] < xs["publish"]
    await expect(page.locator(".schema-table tbody tr")).to_have_count(3)
    await expect(page.locator(".dag-node[data-node='enrich'] .stack")).to_have_count(2)
    await shoot(page, "07-workflow")


async def test_a_run_with_ten_thousand_mapped_children(api: ApiEnv, page: Page) -> None:
    """Rendered as one collapsed box with counts: the page holds no element per child."""
    wide = await _wide_run_store(api)
    try:
        async with serving(api.harness, store=wide) as other:
            await sign_in(page)
            await page.goto(f"{other.url}/#/runs/wide-run")
            square = page.locator(".dag-node[data-node='square']")
            await expect(square.locator(".count")).to_have_text("9,990/10,000", timeout=WAIT_MS)
            await expect(page.locator(".progress-line")).to_contain_text("9,991 succeeded")
            await expect(page.locator(".progress-line")).to_contain_text("7 running")
            elements = await page.evaluate("() => document.getElementsByTagName('*').length")
            assert elements < 1_000, f"{elements} DOM elements for a 10,000-child run"
            await square.click()
            panel = page.locator(".panel")
            await panel.get_by_role("tab", name="Children").click()
            await expect(panel.locator(".child-row")).to_have_count(100, timeout=WAIT_MS)
            await expect(panel.locator(".child-row").first).to_contain_text("square[0]")
            await panel.get_by_role("button", name="Load more").click()
            await expect(panel.locator(".child-row")).to_have_count(200, timeout=WAIT_MS)
            await panel.locator("select").select_option("failed")
            await expect(panel.locator(".child-row")).to_have_count(3, timeout=WAIT_MS)
            await shoot(page, "08-ten-thousand-children")
    finally:
        await wide.close()


async def _wide_run_store(api: ApiEnv) -> Store:
    """A store with one run of fan_out mid-way through 10,000 mapped children."""
    await api.harness.register(integration_flows.fan_out)
    store = await Store.open(api.harness.workdir / "wide.db")
    now = time.time()
    run = RunState(
        run_id="wide-run",
        workflow="fan_out",
        version=1,
        status="running",
        input={"n": 10_000},
        created_at=now - 42,
        updated_at=now,
        node_order=["make_range", "square", "total"],
    )

    def done(attempt_status: str) -> list[Attempt]:
        return [Attempt(1, attempt_status, now - 40, now - 39, now - 38, "worker-1")]

    run.nodes["make_range"] = NodeState(
        "make_range", "make_range", "succeeded", 1, done("succeeded"), output=None
    )
    run.nodes["square"] = NodeState("square", "square", "running", children=10_000)
    run.nodes["total"] = NodeState("total", "total")
    for i in range(10_000):
        if i < 9_990:
            status, attempts = "succeeded", done("succeeded")
        elif i < 9_997:
            status, attempts = "running", [Attempt(1, "running", now - 5, now - 4, None, "w")]
        else:
            status, attempts = "failed", done("failed")
        child = NodeState(f"square[{i}]", "square", status, 1, attempts, input={"x": i}, index=i)
        if status == "failed":
            child.error = {"type": "ValueError", "message": f"bad {i}", "retryable": False}
        run.nodes[child.key] = child
    await store.commit(Batch(runs={run.run_id: run}, changed_nodes={run.run_id: set(run.nodes)}))
    return store
