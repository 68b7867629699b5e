"""Run the peers next to Conveyor, each from the side virtualenv bench/.venv-peers.

The virtualenv is made here on first use (`python -m venv`, then `pip install` of pinned peer
packages from PyPI) and reused; it is git-ignored and never the project's own .venv. Each
peer's driver runs in that virtualenv as a subprocess against a nats-server started here (the
binary and settings Conveyor's workloads use) and prints its results as one JSON line.

Peers (issue 5 names Celery + Redis, Prefect 3, Luigi, taskiq + taskiq-nats): taskiq +
taskiq-nats is the one implemented — it uses the same broker (JetStream), so its figures sit
next to Conveyor's and the floor's with nothing else changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.deploy import ROOT
from bench.workloads import Sizes, progress
from events import EmbeddedServer

PEERS_VENV = ROOT / "bench" / ".venv-peers"
TASKIQ_PACKAGES = ("taskiq==0.13.0", "taskiq-nats==0.7.0")
INSTALL_TIMEOUT_S = 600.0


async def _run(*cmd: str, timeout: float, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TimeoutError(f"{' '.join(cmd[:3])}... did not finish within {timeout}s") from None
    if proc.returncode != 0:
        detail = err.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {detail}")
    return out.decode()


async def ensure_venv(packages: tuple[str, ...]) -> Path:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        progress(f"peers: creating {PEERS_VENV.relative_to(ROOT)}")
        base = getattr(sys, "_base_executable", sys.executable)
        await _run(base, "-m", "venv", str(PEERS_VENV), timeout=120)
    progress(f"peers: pip install {' '.join(packages)} (into the side virtualenv)")
    await _run(str(python), "-m", "pip", "install", "-q", *packages, timeout=INSTALL_TIMEOUT_S)
    return python


async def run_peers(sizes: Sizes, workdir: Path, quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    try:
        python = await ensure_venv(TASKIQ_PACKAGES)
    except Exception as exc:
        return {"taskiq": {"error": f"could not install: {type(exc).__name__}: {exc}"}}
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    server = EmbeddedServer(store_dir=workdir / "nats")
    await asyncio.to_thread(server.start)
    try:
        progress("peers: taskiq + taskiq-nats")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["PYTHONPATH"] = str(ROOT)
        env["BENCH_NATS_URL"] = server.url
        out = await _run(
            str(python),
            "-m",
            "bench.peers.taskiq_bench",
            "--url",
            server.url,
            "--chain",
            str(sizes.chain),
            "--chain-runs",
            str(sizes.chain_runs),
            "--start-runs",
            str(sizes.start_runs),
            "--workers",
            ",".join(str(n) for n in sizes.tput_workers),
            "--window",
            str(sizes.tput_width * sizes.tput_concurrency),
            "--warmup",
            str(sizes.tput_warmup_s),
            "--seconds",
            str(sizes.tput_seconds),
            "--burst",
            str(sizes.burst_runs),
            "--log",
            str(workdir / "taskiq-workers.log"),
            timeout=1800,
            env=env,
        )
        results["taskiq"] = json.loads(out.strip().splitlines()[-1])
    except Exception as exc:
        log = workdir / "taskiq-workers.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        results["taskiq"] = {"error": f"{type(exc).__name__}: {exc}\n{tail}"[:4000]}
    finally:
        await asyncio.to_thread(server.stop)
    return results
