"""`python -m bench`: Conveyor, Celery, taskiq and the JetStream floor side by side, one run.

    .venv/bin/python -m bench [--quick] [--only w123,peers,hop,...] [--no-peers]
                              [--variants defaults,tuned] [--peers celery,taskiq]
                              [--no-profile] [--out bench/results/<date>-<commit>.json]

Writes the JSON report to --out and the markdown tables next to it (same name, `.md`), and
prints them. Workloads: w123 (W1/W2/W3 for each Conveyor variant, with the floor), peers
(Celery + Redis and taskiq + taskiq-nats on W1/W2/W3), then hop, start, throughput, fanout,
growth, recovery (Conveyor at its defaults). See docs/performance.md for what each measures.
Timings are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench import headline
from bench import workloads as w
from bench.deploy import DEFAULTS, ROOT, VARIANTS, Deployment, Variant
from bench.follow import Followed
from bench.noise import NoiseMonitor
from bench.report import markdown, side_by_side_ratios, targets
from events import find_nats_server

WORKLOADS = ("w123", "peers", "hop", "start", "throughput", "fanout", "growth", "recovery")
PEER_NAMES = ("celery", "taskiq")


def git_commit() -> tuple[str, bool]:
    """(short commit, whether tracked files have uncommitted changes)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return commit or "unknown", bool(dirty)


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
    commit, dirty = git_commit()
    # The last commit that changed Conveyor itself (not bench/ or docs): what was measured.
    source = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", "events", "orchestrator", "workers"],
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
        "conveyor_source_commit": source or "unknown",
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "platform": platform.platform(),
        "uvloop_installed": importlib.util.find_spec("uvloop") is not None,
        "hostname": platform.node(),
        "layout": "nats-server, one orchestrator, N workers and the benchmark driver: separate "
        "OS processes on one host (loopback); each peer likewise (its broker/server, its "
        "worker processes, its client)",
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
            "benchmark": "conveyor suite (issues 5 and 12)",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "-m", "bench", *sys.argv[1:]]),
            "quick": args.quick,
            "sizes": {k: getattr(self.sizes, k) for k in self.sizes.__slots__},
            "side_by_side": {"floor": None, "systems": {}},
            "workloads": {},
            "profiles": {},
            "durations_s": {},
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
        self.report["side_by_side"]["ratios"] = side_by_side_ratios(self.report)
        self.report["targets"] = targets(self.report)
        return self.report

    async def _guard(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one workload; an error is recorded (and the others still run)."""
        w.progress(f"--- {name}")
        began = time.monotonic()
        try:
            with self.monitor.window(name):
                return await fn()
        except Exception as exc:
            self.report["errors"][name] = f"{type(exc).__name__}: {exc}"[:4000]
            traceback.print_exc()
            return None
        finally:
            self.report["durations_s"][name] = round(time.monotonic() - began, 1)

    async def _run_all(self, tmp: Path) -> None:
        sizes, only = self.sizes, self.only
        if "w123" in only:
            for variant in self.args.variants:
                await self._guard(variant.name, functools.partial(self._w123, tmp, variant))
        if "peers" in only:
            from bench.peers.run import run_peers

            result = await self._guard(
                "peers", lambda: run_peers(sizes, tmp / "peers", tuple(self.args.peers))
            )
            for name, entry in (result or {}).items():
                self.report["side_by_side"]["systems"][name] = entry
                if "error" in entry:
                    self.report["errors"][f"peer {name}"] = entry["error"]
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

    async def _w123(self, tmp: Path, variant: Variant) -> None:
        """W1/W2/W3 on a deployment of `variant`; on the defaults' also the floor and the
        profiles."""
        sizes = self.sizes
        side = self.report["side_by_side"]

        async def measure(followed: Followed) -> dict[str, Any]:
            result = await headline.measure(followed, sizes, variant.name)
            if variant == DEFAULTS:
                # After W1-W3, not before: the floor's streams (thousands of messages, deleted
                # at its end) must not be the server's work while Conveyor is measured.
                w.progress("floor: hop and one-worker pipeline")
                side["floor"] = await headline.floor_side_by_side(followed.deployment.url, sizes)
                self.report["floor_hop"] = {
                    k: v for k, v in side["floor"].items() if not k.startswith("pipeline")
                }
            if variant == DEFAULTS and sizes.profile_seconds > 0:
                self.report["profiles"]["w123"] = await headline.profile(
                    followed, sizes, self.results_dir / "profiles" / "w123"
                )
            return result

        result = await self._deployed(
            tmp / variant.name, variant.workers, measure, variant.worker_args
        )
        side["systems"][variant.name] = {
            "label": variant.label,
            "layout": f"distributed: nats-server + `conveyor orchestrator` + {variant.workers} x "
            f"`conveyor worker bench/flows.py{''.join(' ' + a for a in variant.worker_args)}` + "
            "this client process; otherwise the CLI's defaults",
            **result,
        }

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
        self,
        workdir: Path,
        workers: int,
        fn: Callable[[Followed], Awaitable[Any]],
        worker_args: tuple[str, ...] = (),
    ) -> Any:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        dep = Deployment(
            workdir, workers=workers, worker_args=worker_args, chain_length=self.sizes.chain
        )
        try:
            await dep.start()
            followed = Followed(dep)
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
            followed = Followed(dep)
            await followed.start()
            floor = report.get("floor_hop")  # measured with W1-W3 when they ran
            if floor is None:
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


def _choices(kind: str, allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names, each one of `allowed`."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {', '.join(unknown)}; choose from {', '.join(allowed)}"
            )
        return names

    return parse


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


def _variants(text: str) -> list[Variant]:
    short = [name.removeprefix("conveyor-") for name in VARIANTS]
    return [VARIANTS[f"conveyor-{n}"] for n in _choices("variant(s)", short)(text)]


def default_out() -> str:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    commit, dirty = git_commit()
    return f"bench/results/{today}-{commit}{'-dirty' if dirty else ''}.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Conveyor, Celery, taskiq and the JetStream floor, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds, not minutes)")
    parser.add_argument(
        "--only",
        type=_choices("workload(s)", WORKLOADS),
        default=list(WORKLOADS),
        help=f"comma-separated workloads (default: all of {','.join(WORKLOADS)})",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the peers workload")
    parser.add_argument(
        "--variants",
        type=_variants,
        default=list(VARIANTS.values()),
        help="Conveyor variants for W1-W3: defaults (the CLI's), tuned (default: both)",
    )
    parser.add_argument(
        "--peers",
        type=_choices("peer(s)", PEER_NAMES),
        default=list(PEER_NAMES),
        help=f"peers for W1-W3 (default: {','.join(PEER_NAMES)})",
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="no py-spy")
    parser.add_argument("--fanout-sizes", type=_ints, help="e.g. 10000,100000")
    parser.add_argument("--growth-runs", type=int, help="stored runs for growth (1000000)")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON report, markdown beside it (default: bench/results/<date>-<commit>.json)",
    )
    args = parser.parse_args(argv)
    args.out = args.out or default_out()
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
