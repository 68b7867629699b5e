"""The README's Quickstart tells a new user what its commands need (issue 9, item 6): the test
command needs more than Python, and says what and how to install it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.browser.support import CHROMIUM

README = Path(__file__).resolve().parents[2] / "README.md"


def _quickstart() -> str:
    text = README.read_text()
    start = text.index("## Quickstart")
    return text[start : text.index("\n## ", start + 1)]


def test_the_quickstart_names_what_the_test_suite_needs_beyond_python() -> None:
    quickstart = _quickstart()
    # The browser tests fail without Chromium where tests/browser/support.py looks for it...
    assert Path(CHROMIUM).name == "chromium"
    assert "sudo apt-get install chromium" in quickstart
    assert "/usr/bin/chromium" in quickstart and "CONVEYOR_CHROMIUM" in quickstart
    # ...and the JavaScript worker's test without node and npm.
    assert "Node.js 18+ and npm" in quickstart
    assert "sudo apt-get install nodejs npm" in quickstart
    assert not re.search(r"^Needs only Python", quickstart, re.MULTILINE)


def test_the_quickstart_commands_are_where_ci_reads_them() -> None:
    """.ci/run takes the test command from the second line of the Quickstart's first block."""
    block = _quickstart().split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].endswith("conveyor dev examples/ml_pipeline.py --run ml_pipeline")
    assert ".venv/bin/pytest -q" in block[1] and "--dist loadfile" in block[1]
