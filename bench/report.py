"""The suite's report as markdown, generated from its JSON; the issue's targets checked.

    .venv/bin/python -m bench.report bench/results/<date>-<commit>.json   # prints the tables

Three tables: W1/W2/W3 side by side (Conveyor's variants, the peers, the floor: the one the
README carries), Conveyor's other workloads next to the floor, and the targets of issue 12.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Issue 12's targets (ratios in one run; absolute figures for orientation).
HOP_P50_MAX, HOP_P99_MAX = 1.5, 2.0
TPUT_MIN_SHARE, TPUT_EXPECTED, TPUT_OVER_CELERY = 0.5, 3000.0, 3.5
RUNS_EXPECTED, RUNS_OVER_CELERY, RUNS_OVER_TASKIQ = 1000.0, 4.0, 1.5
FANOUT_SIZE, FANOUT_WALL_MAX_S, FANOUT_RSS_MAX_MIB = 100_000, 30.0, 512.0
GROWTH_MAX = 1.2
RECOVERY_MAX_MS = 2000.0
DEFAULTS = "conveyor-defaults"


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _over(measured: float, limit: float, *, at_most: bool = True) -> str:
    if at_most:
        return "met" if measured <= limit else f"missed by {100 * (measured / limit - 1):.0f}%"
    return "met" if measured >= limit else f"missed by {100 * (1 - measured / limit):.0f}%"


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b > 0:
        return None
    return round(a / b, 2)


def side_by_side_ratios(report: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each system's W1/W2/W3 against the floor measured in the same run: W1 ms per task and
    hop over the floor's hop; W2 over the one-worker pipeline; W3 over the pipeline / 3 (a
    3-task run is at least three round trips)."""
    side = report.get("side_by_side") or {}
    fl = side.get("floor") or {}
    pipeline = fl.get("pipeline_results_per_s")
    out: dict[str, dict[str, float | None]] = {}
    for name, system in (side.get("systems") or {}).items():
        if "error" in system:
            continue
        out[name] = {
            "w1_ms_per_task_over_floor_hop_p50": _ratio(
                _get(system, "w1", "ms_per_task"), fl.get("hop_p50_ms")
            ),
            "w1_hop_p50_over_floor_hop_p50": _ratio(
                _get(system, "w1", "hop_p50_ms"), fl.get("hop_p50_ms")
            ),
            "w1_hop_p99_over_floor_hop_p99": _ratio(
                _get(system, "w1", "hop_p99_ms"), fl.get("hop_p99_ms")
            ),
            "w2_share_of_floor_pipeline": _ratio(_get(system, "w2", "tasks_per_s"), pipeline),
            "w3_share_of_floor_pipeline_over_3": _ratio(
                _get(system, "w3", "runs_per_s"), pipeline / 3 if pipeline else None
            ),
        }
    return out


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 12 with the measured value, met or not, and by how much."""
    out: list[dict[str, Any]] = []
    wl = report.get("workloads", {})
    side = report.get("side_by_side") or {}
    fl = side.get("floor") or {}
    systems = side.get("systems") or {}
    conveyor = systems.get(DEFAULTS) or {}

    def add(target: str, measured: str, met: bool | None, verdict: str) -> None:
        out.append({"target": target, "measured": measured, "met": met, "verdict": verdict})

    def check(target: str, measured: str, value: float | None, limit: float, at_most: bool) -> None:
        """A target `value <= limit` (at_most) or `value >= limit`; skipped when unmeasured."""
        if value is not None:
            met = value <= limit if at_most else value >= limit
            add(target, measured, met, _over(value, limit, at_most=at_most))

    def peer(name: str, *path: str) -> Any:
        entry = systems.get(name) or {}
        return None if "error" in entry else _get(entry, *path)

    for q, limit in (("p50", HOP_P50_MAX), ("p99", HOP_P99_MAX)):
        c, f = _get(conveyor, "w1", f"hop_{q}_ms"), fl.get(f"hop_{q}_ms")
        r = _ratio(c, f)
        check(
            f"W1 hop {q} (defaults) <= {limit}x the raw JetStream hop {q}",
            f"{c} ms vs floor {f} ms = {r}x",
            r,
            limit,
            at_most=True,
        )
    tps, pipeline = _get(conveyor, "w2", "tasks_per_s"), fl.get("pipeline_results_per_s")
    r = _ratio(tps, pipeline)
    check(
        f"W2 (defaults) >= {TPUT_MIN_SHARE:.0%} of the raw one-worker pipeline",
        f"{tps} tasks/s vs floor {pipeline}/s = {r}",
        r,
        TPUT_MIN_SHARE,
        at_most=False,
    )
    check(
        f"W2 (defaults) >= {TPUT_EXPECTED:,.0f} no-op tasks/s",
        f"{tps} tasks/s",
        tps,
        TPUT_EXPECTED,
        at_most=False,
    )
    rps = _get(conveyor, "w3", "runs_per_s")
    check(
        f"W3 (defaults) >= {RUNS_EXPECTED:,.0f} three-task runs/s",
        f"{rps} runs/s",
        rps,
        RUNS_EXPECTED,
        at_most=False,
    )
    for workload, key, name, limit in (
        ("w2", "tasks_per_s", "celery", TPUT_OVER_CELERY),
        ("w3", "runs_per_s", "celery", RUNS_OVER_CELERY),
        ("w3", "runs_per_s", "taskiq", RUNS_OVER_TASKIQ),
    ):
        r = _ratio(_get(conveyor, workload, key), peer(name, workload, key))
        label = systems[name].get("label", name) if name in systems else name
        check(
            f"{workload.upper()} (defaults) >= {limit}x {label}", f"{r}x", r, limit, at_most=False
        )
    fan = _get(wl, "fanout", "conveyor") or {}
    if fan:
        size = str(FANOUT_SIZE) if str(FANOUT_SIZE) in fan else max(fan, key=int)
        entry = fan[size]
        rss, wall = entry.get("orchestrator_peak_rss_mib"), entry.get("wall_s")
        target = (
            f"{int(size):,}-task fan-out + reduce <= {FANOUT_WALL_MAX_S:.0f} s, orchestrator "
            f"peak RSS < {FANOUT_RSS_MAX_MIB:.0f} MiB"
        )
        if "error" in entry:
            add(target, f"failed ({entry.get('where')}): {entry['error'][:200]}", False, "missed")
        else:
            met = wall is not None and wall <= FANOUT_WALL_MAX_S
            met = met and rss is not None and rss < FANOUT_RSS_MAX_MIB
            verdicts = [
                f"wall {_over(wall, FANOUT_WALL_MAX_S)}" if wall is not None else "wall unknown",
                f"RSS {_over(rss, FANOUT_RSS_MAX_MIB)}" if rss is not None else "RSS unknown",
            ]
            add(target, f"{wall} s, peak RSS {rss} MiB", met, ", ".join(verdicts))
    r = _get(wl, "growth", "ratios", "hop_p50")
    if r is not None:
        stored = _get(wl, "growth", "conveyor", "seeded", "stored_runs")
        add(
            f"growth: hop with {stored:,} stored runs <= {GROWTH_MAX}x the empty store's",
            f"hop p50 {r:.2f}x (ms/task {_get(wl, 'growth', 'ratios', 'ms_per_task')}x)",
            r <= GROWTH_MAX,
            _over(r, GROWTH_MAX),
        )
    worst = _get(wl, "recovery", "conveyor", "first_transition_ms_max")
    if worst is not None:
        median = _get(wl, "recovery", "conveyor", "first_transition_ms_median")
        add(
            "recovery: kill -9 -> restarted -> first transition applied < 2 s",
            f"median {median:.0f} ms, worst {worst:.0f} ms",
            worst < RECOVERY_MAX_MS,
            _over(worst, RECOVERY_MAX_MS),
        )
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _x(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, int | float) else "—"


def _table(header: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    align = "|" + "---|" * numeric_from + "---:|" * (len(header) - numeric_from)
    return ["| " + " | ".join(header) + " |", align, *("| " + " | ".join(r) + " |" for r in rows)]


def side_by_side_table(report: dict[str, Any]) -> list[str]:
    """W1/W2/W3 for every system and the floor, each figure with its ratio to the floor."""
    side = report.get("side_by_side") or {}
    systems: dict[str, Any] = side.get("systems") or {}
    fl = side.get("floor") or {}
    if not systems and not fl:
        return []
    sizes = report.get("sizes", {})
    ratios = side_by_side_ratios(report)
    rows: list[list[str]] = []
    for name, system in systems.items():
        label = system.get("label", name)
        if "error" in system:
            rows.append([label, "FAILED: " + system["error"][:120].replace("|", "/"), "", "", ""])
            continue
        r = ratios.get(name, {})
        rows.append(
            [
                label,
                f"{_fmt(_get(system, 'w1', 'ms_per_task'))} "
                f"({_x(r.get('w1_ms_per_task_over_floor_hop_p50'))})",
                " / ".join(_fmt(_get(system, "w1", f"hop_{q}_ms")) for q in ("p50", "p99")),
                f"{_fmt(_get(system, 'w2', 'tasks_per_s'), 0)} "
                f"({_x(r.get('w2_share_of_floor_pipeline'))})",
                f"{_fmt(_get(system, 'w3', 'runs_per_s'), 0)} "
                f"({_x(r.get('w3_share_of_floor_pipeline_over_3'))})",
            ]
        )
    if fl:
        pipeline = fl.get("pipeline_results_per_s")
        rows.append(
            [
                "raw JetStream floor (nats-py; hop A→B→A, one-worker pipeline)",
                f"{_fmt(fl.get('hop_p50_ms'))} (hop p50)",
                f"{_fmt(fl.get('hop_p50_ms'))} / {_fmt(fl.get('hop_p99_ms'))}",
                f"{_fmt(pipeline, 0)} (pipeline)",
                f"{_fmt(pipeline / 3 if pipeline else None, 0)} (pipeline / 3)",
            ]
        )
    chain, items, runs = sizes.get("chain"), sizes.get("w2_items"), sizes.get("w3_runs")
    header = [
        "",
        f"W1 ms per task, {chain}-task chain (x floor hop)",
        "W1 hop p50 / p99 ms",
        f"W2 tasks/s, producer + {_fmt(items)} mapped + reduce (share of floor)",
        f"W3 runs/s, {_fmt(runs)} concurrent 3-task runs (share of floor)",
    ]
    return _table(header, rows, 1)


def conveyor_table(report: dict[str, Any]) -> list[str]:
    """Conveyor's other workloads (at its defaults) next to the floor."""
    wl = report.get("workloads", {})
    rows: list[list[str]] = []

    def row(workload: str, measure: str, conveyor: Any, fl: Any, r: Any) -> None:
        rows.append([workload, measure, _fmt(conveyor), _fmt(fl), _x(r)])

    hop = wl.get("hop")
    if hop:
        c, f, r = hop["conveyor"], hop["floor"], hop["ratios"]
        n = c["tasks"]
        row(
            "hop",
            "p50 ms (status: finished→next started)",
            c.get("hop_p50_ms"),
            f["hop_p50_ms"],
            r.get("hop_p50"),
        )
        row("hop", "p99 ms", c.get("hop_p99_ms"), f["hop_p99_ms"], r.get("hop_p99"))
        row(
            "hop",
            "p50 ms (events: completed→next started)",
            c.get("evt_hop_p50_ms"),
            f["hop_p50_ms"],
            r.get("evt_hop_p50"),
        )
        row(
            "hop",
            f"{n}-task chain, ms per task (result received)",
            c["ms_per_task"],
            f["hop_p50_ms"],
            r.get("ms_per_task_over_hop_p50"),
        )
    start = wl.get("start")
    if start:
        c, f, r = start["conveyor"], start["floor"], start["ratios"]
        row(
            "start",
            f"requested→first task started p50 ms ({c['runs']} runs)",
            c["p50_ms"],
            f["hop_p50_ms"],
            r["p50"],
        )
        row("start", "p99 ms", c["p99_ms"], f["hop_p99_ms"], r["p99"])
    for entry in _get(wl, "throughput", "by_workers") or []:
        n, c, f, r = entry["workers"], entry["conveyor"], entry["floor"], entry["ratios"]
        row(
            f"throughput x{n}",
            f"no-op tasks/s, {n} worker process(es), sustained",
            c["tasks_per_s"],
            f["pipeline_results_per_s"],
            r["tasks_per_s"],
        )
        b = c["burst"]
        row(
            f"throughput x{n}",
            f"runs/s, {b['runs']:,} concurrent 3-task runs"
            + (f" — FAILED: {b['error'][:120]}".replace("|", "/") if "error" in b else ""),
            b.get("runs_per_s"),
            f["pipeline_results_per_s"] / 3,
            r["burst_runs_per_s"],
        )
    for size, entry in (_get(wl, "fanout", "conveyor") or {}).items():
        label = f"fan-out {int(size):,}"
        if "error" in entry:
            rows.append([label, "FAILED: " + entry["error"][:160].replace("|", "/"), "—", "—", "—"])
        else:
            row(label, "wall s (map + sum)", entry.get("wall_s"), None, None)
        row(label, "orchestrator peak RSS MiB", entry.get("orchestrator_peak_rss_mib"), None, None)
    growth = wl.get("growth")
    if growth:
        c, r = growth["conveyor"], growth["ratios"]
        stored = c["seeded"].get("stored_runs", 0)
        row("growth", "hop p50 ms, empty store", c["empty"].get("hop_p50_ms"), None, None)
        row(
            "growth",
            f"hop p50 ms, {stored:,} stored runs (ratio: to empty)",
            c["seeded"].get("hop_p50_ms"),
            None,
            r.get("hop_p50"),
        )
        row(
            "growth",
            f"ms per task, {stored:,} stored runs (ratio: to empty)",
            c["seeded"]["ms_per_task"],
            None,
            r.get("ms_per_task"),
        )
    rec = wl.get("recovery")
    if rec:
        c = rec["conveyor"]
        row(
            "recovery",
            "kill -9 → first transition applied, ms (median)",
            c.get("first_transition_ms_median"),
            None,
            None,
        )
        row("recovery", "worst of the samples, ms", c.get("first_transition_ms_max"), None, None)
    if not rows:
        return []
    header = ["workload", "measure", "Conveyor (defaults)", "JetStream floor", "ratio"]
    return _table(header, rows, 2)


def markdown(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    lines = [
        f"Conveyor benchmark suite — {report.get('date')}, commit {env.get('conveyor_commit')}, "
        f"{env.get('cores')} cores ({env.get('cpu')}), {env.get('memory_gib')} GiB, "
        f"Python {env.get('python')}, nats-server {env.get('nats_server')}, "
        f"nats-py {env.get('nats_py')}",
        f"command: `{report.get('command')}`",
    ]
    side = side_by_side_table(report)
    if side:
        lines += ["", *side]
        systems = (report.get("side_by_side") or {}).get("systems") or {}
        versions = [
            f"{s.get('label', n)}: {s['version']}" for n, s in systems.items() if "version" in s
        ]
        if versions:
            lines += ["", "Peers: " + "; ".join(versions) + "."]
    detail = conveyor_table(report)
    if detail:
        lines += ["", *detail]
    if report.get("targets"):
        lines += ["", "| target (issue 12) | measured | verdict |", "|---|---|---|"]
        lines += [
            f"| {t['target']} | {t['measured']} | {t['verdict']} |" for t in report["targets"]
        ]
    noise = report.get("noise") or {}
    if noise:
        lines += [
            "",
            "Noise (CPU used by processes outside the benchmark, in cores of "
            f"{env.get('cores')}): "
            + ", ".join(
                f"{name} {v['foreign_cores_avg']:.2f} avg / {v['foreign_cores_max']:.2f} max"
                for name, v in noise.items()
            ),
        ]
    for name, error in (report.get("errors") or {}).items():
        lines.append(f"\nERROR in {name}: {error[:500]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.report <report.json>", file=sys.stderr)
        sys.exit(2)
    print(markdown(json.loads(Path(args[0]).read_text())))


if __name__ == "__main__":
    main()
