"""Headless Chromium (Debian's `chromium`, never a downloaded browser) driven by Playwright's
async API on the session's event loop — the same loop that runs the orchestrator, the worker
and the HTTP server the page talks to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.api.support import api, harness  # noqa: F401  (pytest fixtures)
from tests.browser.support import ARGS, CHROMIUM

# Playwright's default of 5 s per assertion is tight for a page's first render when the suite
# runs four processes on two cores (seen in CI: an empty page at 5 s). An assertion that never
# holds still fails, 15 s later, with the page's state in the message.
expect.set_options(timeout=15_000)


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
            "or set CONVEYOR_CHROMIUM): it is not there"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page (own storage); fails the test on any uncaught error in the page's JS."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield opened
    finally:
        await context.close()
    assert not errors, f"JavaScript errors in the dashboard: {errors}"
