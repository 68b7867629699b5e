"""Run the peers on W1/W2/W3 next to Conveyor, each from the side virtualenv bench/.venv-peers.

The virtualenv is made here on first use (`python -m venv`, then `pip install` of the pinned
peer packages from PyPI) and reused; it is git-ignored and never the project's own .venv. Each
peer's driver runs in it as a subprocess and prints its results as one JSON line:

- taskiq + taskiq-nats (+ taskiq-pipelines) on a nats-server started here, the binary and
  settings Conveyor's workloads use (`bench.peers.taskiq_bench`);
- Celery 5 + Redis on a redis-server started here (Debian's, `bench.peers.redis`;
  `bench.peers.celery_bench`).

A peer that cannot be installed or fails is reported with its error (`could not install: ...`
when it is the installation); the others still run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.deploy import ROOT
from bench.peers.redis import RedisServer, RedisUnavailable, ensure_installed
from bench.workloads import Sizes, progress
from events import EmbeddedServer

PEERS_VENV = ROOT / "bench" / ".venv-peers"
PACKAGES = {
    "taskiq": ("taskiq==0.13.0", "taskiq-nats==0.7.0", "taskiq-pipelines==0.1.4"),
    "celery": ("celery[redis]==5.7.0",),
}
PEERS = tuple(PACKAGES)
INSTALL_TIMEOUT_S = 600.0
DRIVER_TIMEOUT_S = 1800.0


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
    """The side virtualenv's python, with `packages` installed (pip runs only when a pin is
    not yet recorded as installed: a no-op pip resolve costs seconds)."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        progress(f"peers: creating {PEERS_VENV.relative_to(ROOT)}")
        base = getattr(sys, "_base_executable", sys.executable)
        await _run(base, "-m", "venv", str(PEERS_VENV), timeout=120)
    marker = PEERS_VENV / "bench-installed.txt"
    installed = set(marker.read_text().split()) if marker.exists() else set()
    if not set(packages) <= installed:
        progress(f"peers: pip install {' '.join(packages)} (into the side virtualenv)")
        await _run(str(python), "-m", "pip", "install", "-q", *packages, timeout=INSTALL_TIMEOUT_S)
        marker.write_text("\n".join(sorted(installed | set(packages))) + "\n")
    return python


def _size_args(sizes: Sizes) -> list[str]:
    return [
        "--w1-chain",
        str(sizes.chain),
        "--w1-runs",
        str(sizes.chain_runs),
        "--w2-items",
        str(sizes.w2_items),
        "--w2-runs",
        str(sizes.w2_runs),
        "--w3-runs",
        str(sizes.w3_runs),
        "--w3-repeats",
        str(sizes.w3_repeats),
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


async def _driver(python: Path, module: str, sizes: Sizes, log: Path, env: dict[str, str]) -> Any:
    out = await _run(
        str(python),
        "-m",
        module,
        *_size_args(sizes),
        "--log",
        str(log),
        timeout=DRIVER_TIMEOUT_S,
        env=env,
    )
    return json.loads(out.strip().splitlines()[-1])


async def _taskiq(python: Path, sizes: Sizes, workdir: Path) -> Any:
    server = EmbeddedServer(store_dir=workdir / "nats")
    await asyncio.to_thread(server.start)
    try:
        log = workdir / "taskiq-workers.log"
        return await _driver(
            python, "bench.peers.taskiq_bench", sizes, log, _env(BENCH_NATS_URL=server.url)
        )
    finally:
        await asyncio.to_thread(server.stop)


async def _celery(python: Path, sizes: Sizes, workdir: Path) -> Any:
    redis = RedisServer(workdir / "redis")
    await asyncio.to_thread(redis.start)
    try:
        log = workdir / "celery-worker.log"
        result = await _driver(
            python, "bench.peers.celery_bench", sizes, log, _env(BENCH_REDIS_URL=redis.url)
        )
        result["version"] += f"; {redis.version}"
        return result
    finally:
        await asyncio.to_thread(redis.stop)


RUNNERS: dict[str, Callable[[Path, Sizes, Path], Awaitable[Any]]] = {
    "taskiq": _taskiq,
    "celery": _celery,
}


async def run_peers(sizes: Sizes, workdir: Path, only: tuple[str, ...] = PEERS) -> dict[str, Any]:
    """{peer: its driver's result, or {"error": ...}} for each peer in `only`."""
    results: dict[str, Any] = {}
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    for name in only:
        progress(f"peers: {name}")
        try:
            python = await ensure_venv(PACKAGES[name])
        except Exception as exc:
            results[name] = {"error": f"could not install: {type(exc).__name__}: {exc}"[:4000]}
            continue
        peer_dir = workdir / name
        await asyncio.to_thread(peer_dir.mkdir, parents=True, exist_ok=True)
        try:
            results[name] = await RUNNERS[name](python, sizes, peer_dir)
        except RedisUnavailable as exc:
            results[name] = {"error": f"could not install: {exc}"}
        except Exception as exc:
            logs = sorted(peer_dir.glob("*.log"))
            tail = logs[0].read_text(errors="replace")[-1500:] if logs else ""
            results[name] = {"error": f"{type(exc).__name__}: {exc}\n{tail}"[:4000]}
        progress(f"peers: {name} done")
    return results


async def install_all() -> None:
    for name in PEERS:
        await ensure_venv(PACKAGES[name])
    await asyncio.to_thread(ensure_installed)


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.peers.run --install`: make the side virtualenv and install every peer
    (and Debian's redis-server when missing), e.g. in CI before the tests."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.peers.run")
    parser.add_argument("--install", action="store_true", help="install every peer, then exit")
    args = parser.parse_args(argv)
    if not args.install:
        parser.error(
            "nothing to do: the peers run from `python -m bench` (--install prepares them)"
        )
    asyncio.run(install_all())


if __name__ == "__main__":
    main()
