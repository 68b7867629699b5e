"""Helpers for the dashboard tests."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import Page

from tests.api.support import TOKEN

CHROMIUM = os.environ.get("CONVEYOR_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


async def shoot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # Transitions finished: the picture shows the state the test just asserted.
    await page.screenshot(path=str(path), animations="disabled")
    return path


async def sign_in(page: Page) -> None:
    """Skip the token prompt: the token is in the page's storage before its scripts run."""
    await page.add_init_script(f"localStorage.setItem('conveyor.token', {TOKEN!r})")
