"""`python -m bench`: every workload of issue 5, Conveyor next to the JetStream floor, one run.

    .venv/bin/python -m bench [--quick] [--only hop,start,...] [--no-peers] [--no-profile]
                              [--out bench/results/<date>.json]

Writes the JSON report to --out and the markdown table next to it (same name, `.md`), and
prints the table. Workloads: hop, start, throughput, fanout, growth, recovery, peers (see
docs/performance.md for what each measures). Timings are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import workloads as w
from bench.deploy import ROOT, Deployment
from bench.noise import NoiseMonitor
from bench.report import markdown, targets
from events import find_nats_server

WORKLOADS = ("hop", "start", "throughput", "fanout", "growth", "recovery", "peers")


def environment() -> dict[str, Any]:
    server = subprocess.run(
        [find_nats_server(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                "unknown",
            )
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "nats_server": server.rsplit(" ", 1)[-1].lstrip("v") or "unknown",
        "nats_py": importlib.metadata.version("nats-py"),
        "pydantic": importlib.metadata.version("pydantic"),
        "conveyor_commit": f"{commit}{' (+ uncommitted changes)' if dirty else ''}",
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "platform": platform.platform(),
        "uvloop_installed": importlib.util.find_spec("uvloop") is not None,
        "layout": "nats-server, one orchestrator, N workers and the benchmark driver: separate "
        "OS processes on one host (loopback)",
    }


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = w.QUICK if args.quick else w.Sizes()
        if args.fanout_sizes:
            self.sizes = _replace(self.sizes, fanout_sizes=tuple(args.fanout_sizes))
        if args.growth_runs:
            self.sizes = _replace(self.sizes, growth_runs=args.growth_runs)
        if not args.profile:
            self.sizes = _replace(self.sizes, profile_seconds=0.0)
        self.only = set(args.only)
        self.monitor = NoiseMonitor()
        self.results_dir = Path(args.out).with_suffix("")
        self.report: dict[str, Any] = {
            "benchmark": "conveyor suite (issue 5)",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "-m", "bench", *sys.argv[1:]]),
            "quick": args.quick,
            "sizes": {k: getattr(self.sizes, k) for k in self.sizes.__slots__},
            "workloads": {},
            "profiles": {},
            "errors": {},
        }

    async def run(self) -> dict[str, Any]:
        self.report["environment"] = await asyncio.to_thread(environment)
        self.monitor.start()
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
                await self._run_all(Path(tmp))
        finally:
            self.monitor.stop()
        self.report["noise"] = self.monitor.report()
        self.report["duration_s"] = round(time.monotonic() - started, 1)
        self.report["targets"] = targets(self.report)
        return self.report

    async def _guard(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one workload; an error is recorded (and the others still run)."""
        w.progress(f"--- {name}")
        try:
            with self.monitor.window(name):
                return await fn()
        except Exception as exc:
            self.report["errors"][name] = f"{type(exc).__name__}: {exc}"[:4000]
            traceback.print_exc()
            return None

    async def _run_all(self, tmp: Path) -> None:
        sizes, only = self.sizes, self.only
        if only & {"hop", "start", "recovery"}:
            await self._single_worker_phase(tmp / "single")
        if "throughput" in only:
            results = []
            for workers in sizes.tput_workers:
                profile_dir = (
                    self.results_dir / "profiles"
                    if workers == max(sizes.tput_workers) and sizes.profile_seconds > 0
                    else None
                )
                result = await self._guard(
                    f"throughput-x{workers}", self._throughput(tmp, workers, profile_dir)
                )
                if result is not None:
                    if "profile" in result:
                        self.report["profiles"][f"throughput-x{workers}"] = result.pop("profile")
                    results.append(result)
            self.report["workloads"]["throughput"] = {"by_workers": results}
        if "fanout" in only:
            result = await self._guard(
                "fanout",
                lambda: self._deployed(tmp / "fanout", 1, lambda f: w.fanout(f, sizes)),
            )
            if result is not None:
                self.report["workloads"]["fanout"] = result
        if "growth" in only:
            result = await self._guard("growth", lambda: w.growth(sizes, tmp))
            if result is not None:
                self.report["workloads"]["growth"] = result
        if "peers" in only:
            from bench.peers.run import run_peers

            result = await self._guard(
                "peers", lambda: run_peers(sizes, tmp / "peers", self.args.quick)
            )
            if result is not None:
                self.report["peers"] = result

    def _throughput(
        self, tmp: Path, workers: int, profile_dir: Path | None
    ) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            return await self._deployed(
                tmp / f"tput{workers}",
                workers,
                lambda f: w.throughput_one(f, self.sizes, workers, profile_dir),
            )

        return run

    async def _deployed(
        self, workdir: Path, workers: int, fn: Callable[[w.Followed], Awaitable[Any]]
    ) -> Any:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        dep = Deployment(workdir, workers=workers, chain_length=self.sizes.chain)
        try:
            await dep.start()
            followed = w.Followed(dep)
            await followed.start()
            result = await fn(followed)
            dep.check_alive()
            await followed.stop()
            return result
        except BaseException:
            print(dep.logs(), file=sys.stderr)
            raise
        finally:
            await dep.stop()

    async def _single_worker_phase(self, workdir: Path) -> None:
        """hop, start, recovery: one orchestrator, one worker, one floor measured with them."""
        sizes, only, report = self.sizes, self.only, self.report
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        dep = Deployment(workdir, workers=1, chain_length=sizes.chain)
        try:
            await dep.start()
            followed = w.Followed(dep)
            await followed.start()
            floor = await self._guard("floor-hop", lambda: w.floor_hop(dep.url, sizes))
            if floor is None:
                return
            report["floor_hop"] = floor
            if "hop" in only:
                result = await self._guard("hop", lambda: w.hop(followed, sizes, floor))
                if result is not None:
                    report["workloads"]["hop"] = result
                if sizes.profile_seconds > 0:
                    profile = await self._guard(
                        "hop-profile",
                        lambda: w.profile_hop(followed, sizes, self.results_dir / "profiles"),
                    )
                    if profile is not None:
                        report["profiles"]["hop"] = profile
            if "start" in only:
                result = await self._guard("start", lambda: w.start_latency(followed, sizes, floor))
                if result is not None:
                    report["workloads"]["start"] = result
            if "recovery" in only:
                result = await self._guard("recovery", lambda: w.recovery(followed, sizes))
                if result is not None:
                    report["workloads"]["recovery"] = result
            await followed.stop()
        except BaseException:
            print(dep.logs(), file=sys.stderr)
            raise
        finally:
            await dep.stop()


def _replace(sizes: w.Sizes, **changes: Any) -> w.Sizes:
    import dataclasses

    return dataclasses.replace(sizes, **changes)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    return names


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Conveyor's benchmark suite: every workload next to the JetStream floor.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds, not minutes)")
    parser.add_argument(
        "--only",
        type=_names,
        default=None,
        help=f"comma-separated workloads (default: all of {','.join(WORKLOADS)}; "
        "--quick leaves out peers unless named, as they install from PyPI)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the peers workload")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="no py-spy")
    parser.add_argument("--fanout-sizes", type=_ints, help="e.g. 10000,100000")
    parser.add_argument("--growth-runs", type=int, help="stored runs for growth (1000000)")
    parser.add_argument(
        "--out", default=f"bench/results/{today}.json", help="JSON report (markdown beside it)"
    )
    args = parser.parse_args(argv)
    if args.only is None:
        args.only = [n for n in WORKLOADS if not (n == "peers" and args.quick)]
    if args.no_peers:
        args.only = [n for n in args.only if n != "peers"]
    report = _finite(asyncio.run(Suite(args).run()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nwritten to {out} and {out.with_suffix('.md')}", file=sys.stderr)
    if report["errors"]:
        print(f"errors in: {', '.join(report['errors'])}", file=sys.stderr)
        sys.exit(1)
