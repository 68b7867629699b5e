"""The suite's report as a markdown table, and the issue's targets checked against it."""

from __future__ import annotations

from typing import Any

HOP_P50_MAX, HOP_P99_MAX = 1.5, 2.0
TPUT_MIN_SHARE, TPUT_EXPECTED = 0.5, 3000.0
FANOUT_RSS_MAX_MIB = 1024.0
GROWTH_MAX = 1.2
RECOVERY_MAX_MS = 2000.0


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


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 5 with the measured value, met or not, and by how much."""
    out: list[dict[str, Any]] = []
    wl = report.get("workloads", {})

    def add(target: str, measured: str, met: bool | None, verdict: str) -> None:
        out.append({"target": target, "measured": measured, "met": met, "verdict": verdict})

    for q, limit in (("p50", HOP_P50_MAX), ("p99", HOP_P99_MAX)):
        r = _get(wl, "hop", "ratios", f"hop_{q}")
        if r is not None:
            c = _get(wl, "hop", "conveyor", f"hop_{q}_ms")
            f = _get(wl, "hop", "floor", f"hop_{q}_ms")
            add(
                f"hop {q} <= {limit}x the raw JetStream hop {q}",
                f"{c:.2f} ms vs floor {f:.2f} ms = {r:.2f}x",
                r <= limit,
                _over(r, limit),
            )
    for entry in _get(wl, "throughput", "by_workers") or []:
        n, r = entry["workers"], _get(entry, "ratios", "tasks_per_s")
        tps = _get(entry, "conveyor", "tasks_per_s")
        fl = _get(entry, "floor", "pipeline_results_per_s")
        if r is None or tps is None:
            continue
        add(
            f"throughput x{n} workers >= {TPUT_MIN_SHARE:.0%} of the raw pipeline",
            f"{tps:.0f} tasks/s vs floor {fl:.0f}/s = {100 * r:.0f}%",
            r >= TPUT_MIN_SHARE,
            _over(r, TPUT_MIN_SHARE, at_most=False),
        )
        add(
            f"throughput x{n} workers >= {TPUT_EXPECTED:.0f} no-op tasks/s (expected)",
            f"{tps:.0f} tasks/s",
            tps >= TPUT_EXPECTED,
            _over(tps, TPUT_EXPECTED, at_most=False),
        )
    fan = _get(wl, "fanout", "conveyor") or {}
    if fan:
        size = "100000" if "100000" in fan else max(fan, key=int)
        entry = fan[size]
        rss = entry.get("orchestrator_peak_rss_mib")
        if "error" in entry:
            add(
                f"{int(size):,}-task fan-out completes, orchestrator RSS < 1 GiB",
                f"failed ({entry.get('where')}): {entry['error'][:200]}; peak RSS {rss} MiB",
                False,
                "missed: did not complete",
            )
        else:
            add(
                f"{int(size):,}-task fan-out completes, orchestrator RSS < 1 GiB",
                f"completed in {entry.get('wall_s')} s, peak RSS {rss} MiB",
                rss is not None and rss < FANOUT_RSS_MAX_MIB,
                _over(rss, FANOUT_RSS_MAX_MIB) if rss is not None else "RSS unknown",
            )
    r = _get(wl, "growth", "ratios", "hop_p50")
    if r is not None:
        stored = _get(wl, "growth", "conveyor", "seeded", "stored_runs")
        add(
            f"growth: hop with {stored:,} stored runs <= {GROWTH_MAX}x the empty store's",
            f"hop p50 {r:.2f}x (wall/task {_get(wl, 'growth', 'ratios', 'wall_per_task')}x)",
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


def markdown(report: dict[str, Any]) -> str:
    wl = report.get("workloads", {})
    peers: dict[str, Any] = report.get("peers") or {}
    peer_names = [n for n, p in peers.items() if isinstance(p, dict) and "error" not in p]
    rows: list[list[str]] = []

    def row(workload: str, measure: str, conveyor: Any, fl: Any, r: Any, *peer: Any) -> None:
        rows.append([workload, measure, _fmt(conveyor), _fmt(fl), _x(r), *(_fmt(p) for p in peer)])

    blank = ["—"] * len(peer_names)

    def peer_values(*path: str) -> list[Any]:
        return [_get(peers[n], *path) for n in peer_names]

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
            *peer_values("hop", "hop_p50_ms"),
        )
        row(
            "hop",
            "p99 ms",
            c.get("hop_p99_ms"),
            f["hop_p99_ms"],
            r.get("hop_p99"),
            *peer_values("hop", "hop_p99_ms"),
        )
        row(
            "hop",
            "p50 ms (events: completed→next started)",
            c.get("evt_hop_p50_ms"),
            f["hop_p50_ms"],
            r.get("evt_hop_p50"),
            *peer_values("hop", "evt_hop_p50_ms"),
        )
        row(
            "hop",
            f"{n}-task chain wall / {n}, ms",
            c["wall_ms_per_task"],
            f["hop_p50_ms"],
            r.get("wall_per_task_over_hop_p50"),
            *peer_values("hop", "wall_ms_per_task"),
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
            *peer_values("start", "p50_ms"),
        )
        row(
            "start",
            "p99 ms",
            c["p99_ms"],
            f["hop_p99_ms"],
            r["p99"],
            *peer_values("start", "p99_ms"),
        )
    for entry in _get(wl, "throughput", "by_workers") or []:
        n, c, f, r = entry["workers"], entry["conveyor"], entry["floor"], entry["ratios"]
        row(
            f"throughput x{n}",
            f"no-op tasks/s, {n} worker process(es), sustained",
            c["tasks_per_s"],
            f["pipeline_results_per_s"],
            r["tasks_per_s"],
            *peer_values("throughput", str(n), "tasks_per_s"),
        )
        b = c["burst"]
        row(
            f"throughput x{n}",
            f"runs/s, {b['runs']:,} concurrent 3-task runs",
            b["runs_per_s"],
            f["pipeline_results_per_s"] / 3,
            r["burst_runs_per_s"],
            *peer_values("burst", str(n), "runs_per_s"),
        )
    for size, entry in (_get(wl, "fanout", "conveyor") or {}).items():
        label = f"fan-out {int(size):,}"
        if "error" in entry:
            rows.append(
                [label, "FAILED: " + entry["error"][:160].replace("|", "/"), "—", "—", "—", *blank]
            )
        else:
            row(
                label,
                "wall s (map + sum)",
                entry.get("wall_s"),
                None,
                None,
                *peer_values("fanout", size, "wall_s"),
            )
        row(
            label,
            "orchestrator peak RSS MiB",
            entry.get("orchestrator_peak_rss_mib"),
            None,
            None,
            *blank,
        )
    growth = wl.get("growth")
    if growth:
        c, r = growth["conveyor"], growth["ratios"]
        stored = c["seeded"].get("stored_runs", 0)
        row("growth", "hop p50 ms, empty store", c["empty"].get("hop_p50_ms"), None, None, *blank)
        row(
            "growth",
            f"hop p50 ms, {stored:,} stored runs (ratio: to empty)",
            c["seeded"].get("hop_p50_ms"),
            None,
            r.get("hop_p50"),
            *blank,
        )
        row(
            "growth",
            f"wall/task ms, {stored:,} stored runs (ratio: to empty)",
            c["seeded"]["wall_ms_per_task"],
            None,
            r.get("wall_per_task"),
            *blank,
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
            *blank,
        )
        row(
            "recovery",
            "worst of the samples, ms",
            c.get("first_transition_ms_max"),
            None,
            None,
            *blank,
        )
    header = ["workload", "measure", "Conveyor", "JetStream floor", "ratio"] + [
        f"{n} ({peers[n].get('layout_short', '')})" for n in peer_names
    ]
    env = report.get("environment", {})
    lines = [
        f"Conveyor benchmark suite — {report.get('date')}, {env.get('cores')} cores "
        f"({env.get('cpu')}), Python {env.get('python')}, nats-server {env.get('nats_server')}, "
        f"nats-py {env.get('nats_py')}, commit {env.get('conveyor_commit')}",
        f"command: `{report.get('command')}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 2 + "---:|" * (len(header) - 2),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    if report.get("targets"):
        lines += ["", "| target | measured | verdict |", "|---|---|---|"]
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
    for name in peers:
        if isinstance(peers[name], dict) and "error" in peers[name]:
            lines.append(f"\npeer {name} did not run: {peers[name]['error'][:500]}")
    return "\n".join(lines)
