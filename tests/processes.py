"""Child processes a test started (`conveyor ...` writing `proc-N.log`): their logs for a
failure message, and stopping them all."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path


def process_logs(workdir: Path, tail: int) -> str:
    """The last `tail` characters of every `proc-*.log` under `workdir`, each under its name."""
    return "\n".join(
        f"--- {p.name} ---\n{p.read_text(errors='replace')[-tail:]}"
        for p in sorted(workdir.glob("proc-*.log"))
    )


async def stop_processes(processes: Iterable[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM every process still running, then wait `grace_s` for each (SIGKILL after)."""
    processes = list(processes)
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            await asyncio.to_thread(proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            # Reaped, or its Popen warns "still running" when collected: with warnings as
            # errors, a failure in whichever later test happens to collect it.
            await asyncio.to_thread(proc.wait)
