"""What the peers' drivers share: their command line, their worker processes, their output.

Standard library only (plus `bench.stats`): it runs in the side virtualenv. A driver is
started by `bench.peers.run` as

    bench/.venv-peers/bin/python -m bench.peers.<peer>_bench --w1-chain 50 ... --log FILE

runs the peer's worker processes (a process group of its own, so the whole pool is stopped
through the PID of the process it started), measures W1, W2 and W3 with `bench.stats`, and
prints one JSON line on stdout: its result.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 20.0
RESULT_TIMEOUT_S = 600.0


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--w1-chain", type=int, default=50, help="W1: tasks in the chain")
    p.add_argument("--w1-runs", type=int, default=5, help="W1: chains measured (after 1 warm-up)")
    p.add_argument("--w2-items", type=int, default=1000, help="W2: mapped no-ops")
    p.add_argument("--w2-runs", type=int, default=3, help="W2: runs measured (after 1 warm-up)")
    p.add_argument("--w3-runs", type=int, default=200, help="W3: concurrent 3-task runs")
    p.add_argument("--w3-repeats", type=int, default=3, help="W3: batches measured")
    p.add_argument("--log", default=os.devnull, help="the worker processes' output")
    return p


def start_pool(argv: Sequence[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker pool's command in a new session: its supervisor and every child it forks share
    the process group whose id is the PID returned here."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_pool(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the supervisor (it stops its children), SIGKILL to the group after a timeout."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Children that outlived their supervisor (a forked worker mid-shutdown).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def check_alive(proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
