"""`conveyor run --wait` on a 120-task chain as a person sees it: in a real pseudo-terminal (its
output read through a terminal emulator, screen by screen) and without one (a log)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pyte

from events.testing import eventually
from tests.e2e.test_cli import conveyor
from tests.integration.harness import Harness

LONG_CHAIN = str(Path(__file__).with_name("long_chain.py"))
COLUMNS, ROWS = 50, 16


@dataclass
class Terminal:
    code: int
    screens: list[list[str]]  # the screen after each chunk of output

    @property
    def last(self) -> list[str]:
        return self.screens[-1]


def run_in_terminal(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Terminal:
    """Run `conveyor ARGS` with a pseudo-terminal of COLUMNS x ROWS as its stdin, stdout and
    stderr, as a shell would; every chunk it writes is fed to a VT100 emulator."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(terminal)
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    screens: list[list[str]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every holder of the terminal closed it (the process ended)
                break
            if not chunk:
                break
            stream.feed(chunk)
            screens.append(list(screen.display))
        else:
            raise AssertionError(f"conveyor {' '.join(args)} did not end within {timeout}s")
        return Terminal(proc.wait(timeout=30), screens)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)


async def _served(harness: Harness) -> None:
    await harness.start_orchestrator()
    harness.spawn_worker(LONG_CHAIN)  # also registers chain120

    async def registered() -> bool:
        return await harness.client.registry.latest_version("chain120") is not None

    await eventually(registered, message="the worker to register chain120")


async def test_in_a_terminal_the_live_view_fits_and_shows_progress_and_the_running_node(
    harness: Harness,
) -> None:
    await _served(harness)
    env = harness.env()
    result = await asyncio.to_thread(
        run_in_terminal, ["run", "chain120", "--wait"], env, harness.workdir, 240
    )

    assert result.code == 0, "\n".join(result.last)
    moving = [s for s in result.screens if any(re.match(r"\d+/120 done", line) for line in s)]
    assert moving, "no screen showed 'n/120 done':\n" + "\n".join(result.last)
    for screen in moving:
        [tally] = [i for i, line in enumerate(screen) if re.match(r"\d+/120 done", line)]
        # The header is one line above the counts: it never wraps (through the run id or not).
        assert screen[tally - 1].startswith("chain120 · "), screen
    midway = [
        s
        for s in moving
        if any(re.match(r"([1-9]|[1-9]\d|1[01]\d)/120 done · 1 running", line) for line in s)
    ]
    assert midway, "no screen showed the run midway"
    # The node running now is on screen, named (tick, tick_2, ... tick_120).
    assert any(any(re.search(r"now: tick(_\d+)?\b", line) for line in s) for s in midway)
    assert any("run " in line and " succeeded in " in line for line in result.last)


async def test_without_a_terminal_a_120_task_chain_prints_a_bounded_log(harness: Harness) -> None:
    await _served(harness)

    result = await conveyor(harness, "run", "chain120", "--wait", timeout=240)

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) <= 13, result.stderr  # "requested", each tenth of the way, the end
    assert "waiting" not in result.stderr
    assert "120/120 done · 0 running · 0 failed" in lines[-1]
    assert re.search(r"run \w+ succeeded in \d", result.stdout)
