"""The run page as operators use it, in headless Chromium against a real orchestrator, worker and
API: input and output with a download, what triggered the run, the timeline, the event history
(live while the run moves), run-wide logs, folded tracebacks, one time format; a 120-task chain
that fits and can be searched; and the runs list on a 420 px phone.

Waits are on what the page shows (Playwright's `expect` retries), never on sleeps. Screenshots
land in tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, Page, expect

from events.models import LogLine
from tests.api import flows
from tests.api.support import ApiEnv
from tests.browser.support import shoot, sign_in

WAIT_MS = 30_000
# `2026-03-01 14:03:07 UTC` (or `GMT+1`): ISO-like, 24-hour, with the zone.
ONE_FORMAT = re.compile(r"^\d{4}-\d\d-\d\d [0-2]\d:[0-5]\d:[0-5]\d \S+$")


def _gate(task: str) -> Iterator[asyncio.Event]:
    gate = asyncio.Event()
    flows.GATES[task] = gate
    try:
        yield gate
    finally:
        gate.set()
        flows.GATES.pop(task, None)


@pytest.fixture
def fetch_gate() -> Iterator[asyncio.Event]:
    """Holds every `fetch` task until set, so a test can watch a run midway."""
    yield from _gate("fetch")


@pytest.fixture
def enrich_gate() -> Iterator[asyncio.Event]:
    """Holds every child of the mapped `enrich` until set."""
    yield from _gate("enrich")


async def _log(api: ApiEnv, run_id: str, node_id: str, message: str) -> None:
    line = LogLine(
        run_id=run_id,
        node_id=node_id,
        attempt=1,
        time="2026-01-01T12:00:00.000000Z",
        level="info",
        message=message,
    )
    bus = api.harness.client.bus
    await bus.publish_raw(
        bus.topology.log_subject(run_id, node_id), {}, line.model_dump_json().encode()
    )


async def test_input_output_trigger_and_one_time_format(api: ApiEnv, page: Page) -> None:
    run_id = await api.trigger("report", {"rows": 6, "channel": "ops"})
    await api.wait(run_id)
    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{run_id}")
    await expect(page.locator(".run-title .pill")).to_have_text("succeeded", timeout=WAIT_MS)
    trigger = page.locator(".run-trigger")
    await expect(trigger.locator(".tag")).to_have_text("HTTP API")
    await expect(trigger).to_contain_text("from 127.0.0.1")
    started = page.locator(".run-started time")
    assert ONE_FORMAT.match(await started.inner_text()), await started.inner_text()
    await started.hover()
    title = await started.get_attribute("title") or ""
    assert re.match(r"^(just now|\d+[smhd] ago) · ", title), title

    await page.get_by_role("tab", name="Input & output").click()
    io = page.locator("[data-pane='io']")
    await expect(io.locator("[data-io='input'] pre.json")).to_contain_text('"rows": 6')
    await expect(io.locator("[data-io='output'] pre.json")).to_contain_text('"ops: 45"')
    assert "tab=io" in page.url
    async with page.expect_download() as downloading:
        await io.locator("[data-io='input']").get_by_role("button", name="Download").click()
    download = await downloading.value
    assert download.suggested_filename == f"{run_id}-input.json"
    saved = await download.path()
    assert json.loads(saved.read_text()) == {"rows": 6, "factor": 3, "channel": "ops"}
    await shoot(page, "10-run-input-output")

    # The attempts table uses the same format (a clock, for times within the run).
    await page.get_by_role("tab", name="Graph").click()
    await page.click(".dag-node[data-node='fetch']")
    cell = page.locator(".panel .attempts tbody tr td time").first
    assert re.match(r"^[0-2]\d:[0-5]\d:[0-5]\d\.\d{3}$", await cell.inner_text())

    # A value too large for the page is shown in part; the download has all of it.
    await api.harness.register(flows.big_output)
    big = await api.trigger("big_output", {"n": 20_000})
    await api.wait(big)
    await page.goto(f"{api.url}/#/runs/{big}?tab=io")
    output = page.locator("[data-pane='io'] [data-io='output']")
    await expect(output.locator(".value-head")).to_contain_text("shown in part", timeout=WAIT_MS)
    await expect(output.locator("pre.json")).to_contain_text("(truncated)")
    async with page.expect_download() as downloading:
        await output.get_by_role("button", name="Download").click()
    whole = await (await downloading.value).path()
    assert json.loads(whole.read_text()) == list(range(20_000))


async def test_timeline_zooms_and_shows_a_mapped_node_as_one_lane(api: ApiEnv, page: Page) -> None:
    run_id = await api.trigger("report", {"rows": 8})
    await api.wait(run_id)
    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{run_id}?tab=timeline")
    pane = page.locator("[data-pane='timeline']")
    lanes = pane.locator(".tl-lane")
    await expect(lanes).to_have_count(5, timeout=WAIT_MS)
    fetch = pane.locator(".tl-lane[data-node='fetch']")
    await expect(fetch.locator(".tl-bar.st-succeeded")).to_have_count(1)
    await expect(fetch.locator(".tl-bar.tl-queued")).to_have_count(1)
    assert "attempt 1 · succeeded" in (
        await fetch.locator(".tl-bar.st-succeeded").get_attribute("title") or ""
    )
    enrich = pane.locator(".tl-lane[data-node='enrich']")
    await expect(enrich.locator(".tl-density")).to_have_count(1)
    assert await enrich.locator(".tl-bin").count() >= 1
    assert await enrich.locator(".tl-bar").count() == 0  # one lane, not 8 rows of bars
    await shoot(page, "11-timeline")

    label = pane.locator(".tl-window")
    whole = await label.inner_text()
    await pane.get_by_role("button", name="+").click()
    await expect(label).to_contain_text("(zoomed)")
    assert await label.inner_text() != whole
    # Dragging across the chart zooms into the dragged span.
    box = await pane.locator(".tl-axis").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + 40)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 40, steps=4)
    await page.mouse.up()
    await expect(label).to_contain_text("(zoomed)")
    await pane.get_by_role("button", name="Fit").click()
    await expect(label).to_have_text(whole)


async def test_event_history_expands_and_follows_the_run_live(
    api: ApiEnv, page: Page, fetch_gate: asyncio.Event
) -> None:
    run_id = await api.trigger("report", {"rows": 2})
    await api.wait_node(run_id, "fetch", "running")
    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{run_id}?tab=events")
    pane = page.locator("[data-pane='events']")
    rows = pane.locator(".ev-row")
    await expect(rows.first).to_have_attribute("data-type", "run.requested", timeout=WAIT_MS)
    await expect(pane.locator(".ev-row[data-type='task.started']")).to_have_count(1)
    await expect(pane.locator(".ev-row[data-type='run.succeeded']")).to_have_count(0)

    # Expanded: attributes, NATS headers and data.
    await rows.first.locator("summary").click()
    detail = rows.first.locator(".ev-detail")
    await expect(detail).to_contain_text("conveyor/api")
    await expect(detail).to_contain_text("ce-specversion")
    await expect(detail.locator("pre.json")).to_contain_text('"workflow": "report"')

    # Live: the run moves on and its events join the list without a reload.
    fetch_gate.set()
    await expect(pane.locator(".ev-row[data-type='run.succeeded']")).to_have_count(
        1, timeout=WAIT_MS
    )
    # fetch, enrich x2, audit, summarise, publish
    await expect(pane.locator(".ev-row[data-type='task.completed']")).to_have_count(6)
    seqs = [int(s) for s in await rows.evaluate_all("(rows) => rows.map((r) => r.dataset.seq)")]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    await pane.get_by_label("Filter events").fill("enrich")
    # Both children's completions (and their starts, for a child still running at 0.1 s).
    await expect(pane.locator(".ev-row[data-type='task.completed']:visible")).to_have_count(2)
    shown = await pane.locator(".ev-row:visible .ev-node").all_inner_texts()
    assert shown and all(n.startswith("enrich[") for n in shown), shown
    await shoot(page, "12-event-history")


async def test_a_running_mapped_node_and_the_items_of_its_children(
    api: ApiEnv, page: Page, enrich_gate: asyncio.Event
) -> None:
    run_id = await api.trigger("report", {"rows": 3, "factor": 10})
    await api.wait_node(run_id, "enrich", "running")
    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{run_id}")
    await page.click(".dag-node[data-node='enrich']")
    panel = page.locator(".panel")
    # Its children say how it goes: no "Output null" and no attempts dash while they run.
    await expect(panel.locator("dl.kv")).to_contain_text("of 3 finished", timeout=WAIT_MS)
    await expect(panel).to_contain_text("once every child succeeded")
    text = await panel.inner_text()
    assert "null" not in text and "\N{EN DASH}" not in text.split("Mapped over")[0], text
    await panel.get_by_role("tab", name="Children").click()
    children = panel.locator(".child-row")
    await expect(children).to_have_count(3)
    # Each child shows the item it was mapped over.
    assert await panel.locator(".child-item").all_inner_texts() == ["0", "1", "2"]
    await shoot(page, "21-mapped-node-running")

    enrich_gate.set()
    await api.wait(run_id)
    await panel.get_by_role("tab", name="Details").click()
    output = panel.locator("[data-value='output'] pre.json")
    await expect(output).to_be_visible(timeout=WAIT_MS)
    assert json.loads(await output.inner_text()) == [0, 10, 20]  # the children's, in order
    await expect(panel.locator("dl.kv")).to_contain_text("3 of 3 finished")


async def test_run_wide_logs_with_node_filters(api: ApiEnv, page: Page) -> None:
    run_id = await api.trigger("report", {"rows": 2})
    await api.wait(run_id)
    await _log(api, run_id, "audit", "audited both rows")
    await _log(api, run_id, "enrich[1]", "enriched row 1")
    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{run_id}?tab=logs")
    pane = page.locator("[data-pane='logs']")
    messages = pane.locator(".log-msg")
    await expect(messages).to_have_text(
        ["fetched 2 rows", "audited both rows", "enriched row 1"], timeout=WAIT_MS
    )
    await pane.get_by_role("button", name="enrich", exact=True).click()
    await expect(messages).to_have_text(["enriched row 1"])
    await expect(pane.locator(".log-node")).to_have_text(["enrich[1]#1"])
    await pane.get_by_role("button", name="audit", exact=True).click()
    await expect(messages).to_have_text(["audited both rows", "enriched row 1"])
    await shoot(page, "13-run-logs")
    await pane.get_by_role("button", name="All nodes").click()
    await expect(messages).to_have_count(3)


async def test_a_traceback_leads_with_the_users_frames(api: ApiEnv, page: Page) -> None:
    run_id = await api.trigger("broken", {"reason": "the input file is empty"})
    await api.wait(run_id)
    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{run_id}?node=explode")
    panel = page.locator(".panel")
    view = panel.locator(".trace-view")
    await expect(view.locator(".trace-exc")).to_contain_text(
        "NonRetryableError: cannot continue: the input file is empty", timeout=WAIT_MS
    )
    user = view.locator(".trace-frames.user .trace-frame")
    await expect(user.first).to_contain_text("flows.py")
    await expect(user.first).to_contain_text("in explode")
    await expect(user.first.locator(".trace-code")).to_contain_text("raise NonRetryableError")
    folded = view.locator(".trace-framework")
    await expect(folded.locator("summary")).to_contain_text("framework frame")
    assert await folded.get_attribute("open") is None
    await expect(folded).to_contain_text("attempt.py")  # Conveyor's own, folded away
    await shoot(page, "14-traceback")


async def test_a_chain_of_120_tasks_fits_and_is_searchable(api: ApiEnv, page: Page) -> None:
    await api.harness.register(flows.long_chain)
    run_id = await api.trigger("long_chain", {"start": 1})
    final = await api.wait(run_id, timeout=120)
    assert final["output"] == 1 + flows.CHAIN_LENGTH
    await sign_in(page)
    await page.goto(f"{api.url}/#/runs/{run_id}")
    nodes = page.locator(".dag-node")
    await expect(nodes).to_have_count(flows.CHAIN_LENGTH, timeout=WAIT_MS)
    await expect(page.locator(".dag-node[data-node='step_120']")).to_have_class(
        re.compile("st-succeeded"), timeout=WAIT_MS
    )
    # "Fit" fits: every one of the 120 boxes lies inside the graph's viewport, wrapped into
    # bands, at a scale where the labels are still drawn at a few pixels.
    inside = await _boxes_inside(page)
    assert inside == flows.CHAIN_LENGTH, f"only {inside} of 120 nodes in view after fit"
    bands = int(await page.locator("svg.dag").get_attribute("data-bands") or "1")
    assert bands > 1
    await expect(page.locator(".dag-minimap")).to_be_hidden()
    await shoot(page, "15-chain-of-120-fit")

    # Zoomed in, the graph overflows: the minimap shows where the view is.
    for _ in range(4):
        await page.get_by_role("button", name="+").click()
    await expect(page.locator(".dag-minimap")).to_be_visible()
    assert await _boxes_inside(page) < flows.CHAIN_LENGTH

    # Search: the node is found, brought into view and selected; the others fade.
    await page.get_by_label("Find a node by id").fill("step_77")
    await expect(page.locator(".dag-found")).to_have_text("1 found")
    await page.get_by_label("Find a node by id").press("Enter")
    target = page.locator(".dag-node[data-node='step_77']")
    await expect(target).to_have_class(re.compile(r"\bmatch\b"))
    await expect(target).to_have_class(re.compile(r"\bselected\b"))
    await expect(page.locator(".panel h2")).to_have_text("step_77")
    assert await _box_inside(page, "step_77")
    await expect(page.locator(".dag-node[data-node='step_76']")).to_have_class(
        re.compile(r"\bdim\b")
    )
    await shoot(page, "16-chain-of-120-search")

    await page.click("#dag-fit")
    assert await _boxes_inside(page) == flows.CHAIN_LENGTH


_INSIDE = """(only) => {
    const view = document.querySelector('.dag-scroll').getBoundingClientRect();
    return [...document.querySelectorAll('.dag-node')]
        .filter((g) => !only || g.dataset.node === only)
        .filter((g) => {
            const b = g.querySelector('.box').getBoundingClientRect();
            return b.left >= view.left - 1 && b.right <= view.right + 1
                && b.top >= view.top - 1 && b.bottom <= view.bottom + 1;
        }).length;
}"""


async def _boxes_inside(page: Page) -> int:
    return int(await page.evaluate(_INSIDE, None))


async def _box_inside(page: Page, node: str) -> bool:
    return int(await page.evaluate(_INSIDE, node)) == 1


async def test_the_runs_list_on_a_420px_phone(api: ApiEnv, browser: Browser) -> None:
    ok = await api.trigger("report", {"rows": 1})
    failed = await api.trigger("broken", {"reason": "a long reason " * 8})
    await api.wait(ok)
    await api.wait(failed)
    context = await browser.new_context(viewport={"width": 420, "height": 860})
    phone = await context.new_page()
    errors: list[str] = []
    phone.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await sign_in(phone)
        await phone.goto(f"{api.url}/#/runs")
        await expect(phone.locator(".runs-table tr.clickable")).to_have_count(2, timeout=WAIT_MS)
        await expect(phone.locator(f"tr[data-run='{failed}'] .err-line")).to_be_visible()
        width = await phone.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 420, f"the page is {width} px wide on a 420 px screen"
        button = await phone.locator("#trigger-open").bounding_box()
        assert button is not None and button["x"] >= 0 and button["x"] + button["width"] <= 420
        # Measured in one evaluation: the list re-renders as the stream's refreshes land, so a
        # row located first and measured after could be a detached one.
        edges = await phone.locator(".runs-table tr.clickable").evaluate_all(
            "(rows) => rows.map((r) => [r.getBoundingClientRect().left,"
            " r.getBoundingClientRect().right])"
        )
        assert len(edges) == 2 and all(left >= 0 and right <= 420 for left, right in edges), edges
        await shoot(phone, "17-runs-list-420px")
        await phone.click("#trigger-open")
        await expect(phone.locator("#trigger-dialog")).to_be_visible()
    finally:
        await context.close()
    assert not errors, errors
