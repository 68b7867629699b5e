"""Sampling profiles of Conveyor's processes while a workload runs (py-spy), summarised.

`py-spy record --format raw` writes collapsed stacks (`frame;frame;... count`, the input of a
flamegraph: `flamegraph.pl` or speedscope draw it). The summary lists the frames with the most
samples on top of the stack (self) and anywhere in it (inclusive), as shares of all samples of
threads py-spy saw as active. py-spy's idle detection is a heuristic: some time blocked in
`epoll` still shows (as `EpollSelector.select`), which is the process waiting for the network.
The inclusive list leaves out the frames every stack has (runpy, the event loop's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PY_SPY = Path(sys.executable).with_name("py-spy")


def available() -> str | None:
    if PY_SPY.exists():
        return str(PY_SPY)
    return shutil.which("py-spy")


class Recording:
    """`py-spy record` on one pid in the background, for `duration_s` seconds."""

    def __init__(self, pid: int, out: Path, duration_s: float, rate: int = 200) -> None:
        self.pid, self.out, self.duration_s, self.rate = pid, out, duration_s, rate
        self._proc: asyncio.subprocess.Process | None = None
        self.error: str | None = None

    async def start(self) -> None:
        exe = available()
        if exe is None:
            self.error = "py-spy not installed"
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--duration",
            str(max(1, round(self.duration_s))),
            "--rate",
            str(self.rate),
            "--format",
            "raw",
            "--function",
            "--nonblocking",
            "--output",
            str(self.out),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def wait(self) -> dict[str, Any]:
        if self._proc is None:
            return {"error": self.error or "not started"}
        try:
            _, stderr = await asyncio.wait_for(self._proc.communicate(), self.duration_s + 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            return {"error": "py-spy did not finish"}
        if self._proc.returncode != 0 or not self.out.exists():
            return {"error": f"py-spy exited {self._proc.returncode}: {stderr.decode()[-500:]}"}
        return summarise(self.out)


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            if not any(marker in frame for marker in _SCAFFOLDING):
                inclusive[frame] += count
    if total == 0:
        return {"samples": 0, "raw": str(path)}

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": frame, "pct": round(100 * n / total, 1)}
            for frame, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "raw": str(path),
        "self": share(self_counts),
        "inclusive": share(inclusive),
    }


# Frames every stack of an asyncio program or thread has: left out of the inclusive list.
_SCAFFOLDING = (
    "<frozen runpy>",
    "<module> (",
    "main (orchestrator/cli.py)",
    "(asyncio/runners.py)",
    "run_forever (",
    "run_until_complete (",
    "BaseEventLoop._run_once (",
    "Handle._run (",
    "(stdlib/threading.py)",
    "Thread.run (",
)


def _short(frame: str) -> str:
    """`fn (path/to/module.py:12)` -> `fn (module.py)`; site-packages paths by package."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/work/main/" in file:
        file = file.split("/work/main/", 1)[1]
    elif "/lib/python" in file:
        file = "stdlib/" + file.rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name
