"""Foundation benchmark: Conveyor's per-task overhead against the raw JetStream floor.

    .venv/bin/python -m bench.foundation [--out bench/results/foundation.json]

Starts an embedded nats-server (temp store) and Conveyor as users deploy it — one
`python -m orchestrator.cli orchestrator` process and one `... worker bench/flows.py` process,
at the CLI's default settings — then measures, in the same run and on the same server:

- chain: a linear chain of N no-op tasks (warm-up once, then R runs). Per run, the wall time
  from just before `trigger` to the run's final status (its `finished_at`: the time in the event
  stream of the result that ended it) divided by N; and, from the status's attempt history, each
  hop between consecutive nodes: `started_at(i+1) - finished_at(i)` (the times in the stream of
  the events the orchestrator applied: a result, the next start).
- fan-out: a no-op mapped over M items, then a sum (warm-up once at min(100, M), then R runs).
- floor: plain nats-py between this process and a child process (`bench.floor`): publish ->
  stream -> fetch(1) -> publish -> stream -> fetch(1), the same hop; and the pipelined
  throughput of publish_async and fetch(100)+ack.

Prints a markdown table and writes JSON. Timings are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import floor
from bench.deploy import NAMESPACE, Deployment
from bench.stats import percentile
from events import find_nats_server
from orchestrator.client import Client

CHAIN_WORKFLOW, FANOUT_WORKFLOW = "bench_chain", "bench_fanout"
FANOUT_WARMUP = 100


# ---- statistics ------------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b > 0 else math.nan


# ---- measurements ----------------------------------------------------------------------------


async def _run(
    client: Client, workflow: str, input: dict[str, Any], timeout: float
) -> tuple[dict[str, Any], float, float]:
    """Trigger and follow one run: (final status, time.time() just before the trigger, wall
    to `wait`'s return). The final status's timestamps are on the same host clock."""
    started = time.time()
    run_id = await client.trigger(workflow, input)
    final = await client.wait(run_id, timeout=timeout)
    observed = time.time() - started
    if final["status"] != "succeeded":
        raise RuntimeError(f"{workflow} run {run_id} ended {final['status']}: {final['error']}")
    return final, started, observed


async def measure_chain(client: Client, length: int, repeat: int) -> dict[str, Any]:
    order = [node.id for node in (await client.registry.get(CHAIN_WORKFLOW)).spec.nodes]
    if len(order) != length:
        raise RuntimeError(f"{CHAIN_WORKFLOW} has {len(order)} nodes, expected {length}")
    await _run(client, CHAIN_WORKFLOW, {"start": 0}, timeout=300)  # warm-up
    runs: list[dict[str, Any]] = []
    hops: list[float] = []
    spans: list[float] = []
    for _ in range(repeat):
        final, started, observed = await _run(client, CHAIN_WORKFLOW, {"start": 0}, timeout=300)
        wall = final["finished_at"] - started
        if final["output"] != length:
            raise RuntimeError(f"chain output {final['output']!r}, expected {length}")
        attempts = [final["nodes"][node]["attempt_history"][-1] for node in order]
        run_hops = [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(attempts)]
        run_spans = [a["finished_at"] - a["started_at"] for a in attempts]
        hops += run_hops
        spans += run_spans
        runs.append(
            {
                "wall_s": round(wall, 4),
                "ms_per_task": _ms(wall / length),
                "client_wall_s": round(observed, 4),
                "hop_p50_ms": _ms(percentile(run_hops, 50)) if run_hops else None,
                "hop_p99_ms": _ms(percentile(run_hops, 99)) if run_hops else None,
                # trigger (registry read + publish) -> the orchestrator applied the request
                "trigger_ms": _ms(final["created_at"] - started),
            }
        )
    result: dict[str, Any] = {
        "tasks": length,
        "runs": runs,
        "ms_per_task_median": round(statistics.median(r["ms_per_task"] for r in runs), 3),
        "span_p50_ms": _ms(percentile(spans, 50)),
        "span_p99_ms": _ms(percentile(spans, 99)),
        "hops": len(hops),
    }
    if hops:
        result["hop_p50_ms"] = _ms(percentile(hops, 50))
        result["hop_p99_ms"] = _ms(percentile(hops, 99))
    return result


BREAKDOWN_PHASES = (
    ("orchestrator: completed on the wire -> applied", "wire_completed", "applied_finished"),
    ("orchestrator: applied -> next dispatch on the wire", "applied_finished", "wire_dispatch"),
    ("worker: dispatch on the wire -> started on the wire", "wire_dispatch", "wire_started"),
    ("worker: started on the wire -> completed on the wire", "wire_started", "wire_completed"),
)


async def measure_chain_breakdown(client: Client, length: int) -> dict[str, Any]:
    """One extra chain run with a tap: where a task's time goes, phase by phase.

    A core-NATS subscription in this process sees every dispatch (`<ns>.task.>`) and every
    worker event (`<ns>.evt.>`) as it is published, stamped with this host's clock; together
    with the orchestrator-applied timestamps of the attempt history this splits the period of
    one task into four consecutive phases. Wire stamps include ~0.1 ms of delivery to the tap.
    Separate from the headline numbers (the tap is one more subscriber on the server).
    """
    order = [node.id for node in (await client.registry.get(CHAIN_WORKFLOW)).spec.nodes]
    seen: dict[str, float] = {}

    async def tap(subject: str, headers: Mapping[str, str], body: bytes) -> None:
        event_id = headers.get("ce-id")
        if event_id is None:
            return
        now = seen.setdefault(event_id, time.time())
        if event_id.endswith(":completed"):
            # A short task sends no task.started: its result says how long it ran.
            ran_s = json.loads(body).get("ran_s")
            if ran_s is not None:
                seen.setdefault(event_id.rsplit(":", 1)[0] + ":started", now - float(ran_s))

    subs = [
        await client.bus.subscribe(f"{NAMESPACE}.task.>", tap),
        await client.bus.subscribe(f"{NAMESPACE}.evt.>", tap),
    ]
    try:
        await client.bus.flush()
        final, _, _ = await _run(client, CHAIN_WORKFLOW, {"start": 0}, timeout=300)
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    run_id = final["run_id"]
    samples: dict[str, list[float]] = {name: [] for name, _, _ in BREAKDOWN_PHASES}
    applying_started: list[float] = []
    for previous, node in itertools.pairwise(order):
        before = final["nodes"][previous]["attempt_history"][-1]
        after = final["nodes"][node]["attempt_history"][-1]
        prefix = f"{run_id}:{node}:{after['attempt']}"
        stamps: dict[str, float | None] = {
            "wire_completed": seen.get(f"{run_id}:{previous}:{before['attempt']}:completed"),
            "applied_finished": before["finished_at"],
            "wire_dispatch": seen.get(f"{prefix}:dispatch"),
            "wire_started": seen.get(f"{prefix}:started"),
        }
        stamps_next = {**stamps, "wire_completed": seen.get(f"{prefix}:completed")}
        for name, start, end in BREAKDOWN_PHASES:
            source = stamps_next if end == "wire_completed" else stamps
            begin, finish = source[start], source[end]
            if begin is not None and finish is not None:
                samples[name].append(finish - begin)
        wire_started = stamps["wire_started"]
        if wire_started is not None:
            applying_started.append(after["started_at"] - wire_started)
    phases = {
        name: {"p50_ms": _ms(percentile(values, 50)), "p90_ms": _ms(percentile(values, 90))}
        for name, values in samples.items()
        if values
    }
    if applying_started:
        phases["(off the critical path) orchestrator: started on the wire -> applied"] = {
            "p50_ms": _ms(percentile(applying_started, 50)),
            "p90_ms": _ms(percentile(applying_started, 90)),
        }
    return {
        "tasks": length,
        "ms_per_task": _ms((final["finished_at"] - final["created_at"]) / length),
        "phases": phases,
    }


async def measure_fanout(client: Client, items: int, repeat: int) -> dict[str, Any]:
    warmup = list(range(min(FANOUT_WARMUP, items)))
    await _run(client, FANOUT_WORKFLOW, {"items": warmup}, timeout=600)
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        final, started, observed = await _run(
            client, FANOUT_WORKFLOW, {"items": list(range(items))}, timeout=1800
        )
        wall = final["finished_at"] - started
        expected = items * (items + 1) // 2  # sum of (i + 1) for i < items
        if final["output"] != expected:
            raise RuntimeError(f"fan-out output {final['output']!r}, expected {expected}")
        runs.append(
            {
                "wall_s": round(wall, 4),
                "client_wall_s": round(observed, 4),
                "tasks_per_s": round((items + 1) / wall, 1),
            }
        )
    walls = [r["wall_s"] for r in runs]
    return {
        "items": items,
        "tasks": items + 1,
        "runs": runs,
        "wall_s_median": round(statistics.median(walls), 4),
        "wall_s_min": min(walls),
        "wall_s_max": max(walls),
        "tasks_per_s_median": round((items + 1) / statistics.median(walls), 1),
    }


async def measure_floor(url: str, round_trips: int, tput: int) -> dict[str, Any]:
    result = await floor.measure(url, round_trips, tput)
    return {
        "hops": len(result.round_trips_s),
        "hop_p50_ms": _ms(percentile(result.round_trips_s, 50)),
        "hop_p99_ms": _ms(percentile(result.round_trips_s, 99)),
        "tput_messages": tput,
        "publish_async_msgs_per_s": round(result.publish_async_msgs_per_s),
        "fetch_ack_msgs_per_s": round(result.fetch_ack_msgs_per_s),
    }


# ---- the whole benchmark ---------------------------------------------------------------------


def environment() -> dict[str, Any]:
    server = subprocess.run(
        [find_nats_server(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "nats_server": server.rsplit(" ", 1)[-1].lstrip("v") or "unknown",
        "nats_py": importlib.metadata.version("nats-py"),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "event_loop": "asyncio",
    }


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    chain_repeat = args.repeat if args.repeat is not None else 5
    fanout_repeat = args.repeat if args.repeat is not None else 3
    tput = args.floor_tput if args.floor_tput is not None else 20 * args.floor_n
    report: dict[str, Any] = {
        "benchmark": "foundation",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.foundation", *sys.argv[1:]]),
        "environment": await asyncio.to_thread(environment),
        "config": {
            "chain_tasks": args.chain,
            "chain_runs": chain_repeat,
            "fanout_items": args.fanout,
            "fanout_warmup_items": min(FANOUT_WARMUP, args.fanout),
            "fanout_runs": fanout_repeat,
            "floor_round_trips": args.floor_n,
            "floor_tput_messages": tput,
            "worker_settings": "the CLI's defaults",
            "layout": "nats-server, orchestrator and worker: separate OS processes on one host",
        },
    }
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        deployment = Deployment(Path(tmp), chain_length=args.chain)
        try:
            client = await deployment.start()  # connected, and ready when it returns
            _progress("ready; measuring the JetStream floor")
            report["floor"] = await measure_floor(deployment.url, args.floor_n, tput)
            _progress(f"chain of {args.chain} x {chain_repeat}")
            report["chain"] = await measure_chain(client, args.chain, chain_repeat)
            if args.chain > 1:
                _progress("one more chain with a tap, for the breakdown")
                report["chain_breakdown"] = await measure_chain_breakdown(client, args.chain)
            _progress(f"fan-out of {args.fanout} x {fanout_repeat}")
            report["fanout"] = await measure_fanout(client, args.fanout, fanout_repeat)
            deployment.check_alive()
        except BaseException:
            print(deployment.logs(), file=sys.stderr)
            raise
        finally:
            await deployment.stop()
    chain, fl = report["chain"], report["floor"]
    report["ratios"] = {
        "chain_ms_per_task_over_floor_hop_p50": _ratio(
            chain["ms_per_task_median"], fl["hop_p50_ms"]
        ),
    }
    if "hop_p50_ms" in chain:
        report["ratios"]["hop_p50_over_floor_p50"] = _ratio(chain["hop_p50_ms"], fl["hop_p50_ms"])
        report["ratios"]["hop_p99_over_floor_p99"] = _ratio(chain["hop_p99_ms"], fl["hop_p99_ms"])
    return report


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def markdown(report: dict[str, Any]) -> str:
    env, cfg = report["environment"], report["config"]
    chain, fan, fl, ratios = report["chain"], report["fanout"], report["floor"], report["ratios"]
    nan = float("nan")
    rows = [
        ("chain: ms per task (median of runs)", f"{chain['ms_per_task_median']:.2f}"),
        (
            "chain: hop p50 / p99 ms",
            f"{chain.get('hop_p50_ms', nan):.2f} / {chain.get('hop_p99_ms', nan):.2f}",
        ),
        (
            "chain: task start->finish p50 / p99 ms",
            f"{chain['span_p50_ms']:.2f} / {chain['span_p99_ms']:.2f}",
        ),
        (
            f"fan-out {fan['items']}: wall s median (min-max)",
            f"{fan['wall_s_median']:.3f} ({fan['wall_s_min']:.3f}-{fan['wall_s_max']:.3f})",
        ),
        ("fan-out: tasks/s (median)", f"{fan['tasks_per_s_median']:.0f}"),
        ("floor: hop p50 / p99 ms", f"{fl['hop_p50_ms']:.2f} / {fl['hop_p99_ms']:.2f}"),
        ("floor: publish_async msgs/s", f"{fl['publish_async_msgs_per_s']}"),
        ("floor: fetch(100)+ack msgs/s", f"{fl['fetch_ack_msgs_per_s']}"),
        (
            "ratio: chain ms/task / floor hop p50",
            f"{ratios['chain_ms_per_task_over_floor_hop_p50']:.2f}",
        ),
        (
            "ratio: hop p50 / floor p50, p99 / p99",
            f"{ratios.get('hop_p50_over_floor_p50', nan):.2f}, "
            f"{ratios.get('hop_p99_over_floor_p99', nan):.2f}",
        ),
    ]
    breakdown = report.get("chain_breakdown", {}).get("phases", {})
    rows += [
        (f"breakdown: {name} p50 / p90 ms", f"{v['p50_ms']:.2f} / {v['p90_ms']:.2f}")
        for name, v in breakdown.items()
    ]
    lines = [
        f"Conveyor foundation benchmark — {report['date']}, {env['cores']} cores, "
        f"Python {env['python']}, nats-server {env['nats_server']}, nats-py {env['nats_py']}",
        f"(chain {cfg['chain_tasks']} tasks x {cfg['chain_runs']} runs; fan-out "
        f"{cfg['fanout_items']} x {cfg['fanout_runs']}; floor {cfg['floor_round_trips']} "
        f"hops, {cfg['floor_tput_messages']} msgs)",
        "",
        "| measure | value |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.foundation",
        description="Conveyor's per-task overhead side by side with the raw JetStream floor.",
    )
    parser.add_argument("--out", default="bench/results/foundation.json", help="JSON output path")
    parser.add_argument("--chain", type=_positive, default=50, help="tasks in the chain")
    parser.add_argument("--fanout", type=_positive, default=1000, help="items in the fan-out")
    parser.add_argument(
        "--repeat", type=_positive, default=None, help="runs per measurement (default 5 / 3)"
    )
    parser.add_argument("--floor-n", type=_positive, default=500, help="floor round trips")
    parser.add_argument(
        "--floor-tput", type=_positive, default=None, help="floor throughput messages (20 x N)"
    )
    args = parser.parse_args(argv)
    report = asyncio.run(benchmark(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
