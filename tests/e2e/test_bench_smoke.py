"""The benchmarks at a tiny size: they run end to end and write well-formed JSON.

Smoke tests, not benchmarks: no timing thresholds, only that every number is there, finite
and positive (benchmarks are never timing assertions). `python -m bench --quick` runs every
workload of the suite (hop, start, throughput, fan-out, growth, recovery; peers are left out
as they install from PyPI); `python -m bench.foundation` is the earlier chain + fan-out one.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _positive(section: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)


def test_suite_quick_runs_every_workload_and_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "results" / "quick.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-profile", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "| workload | measure | Conveyor | JetStream floor | ratio |" in result.stdout
    assert out.with_suffix(".md").read_text().startswith("Conveyor benchmark suite")

    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert report["quick"] is True
    env = report["environment"]
    assert env["python"] and env["nats_server"] and env["nats_py"] and env["cores"] >= 1
    workloads = report["workloads"]
    assert set(workloads) == {"hop", "start", "throughput", "fanout", "growth", "recovery"}

    _positive(report["floor_hop"], "hop_p50_ms", "hop_p99_ms", "simple_publish_async_msgs_per_s")

    hop = workloads["hop"]
    assert hop["conveyor"]["tasks"] == report["sizes"]["chain"]
    _positive(hop["conveyor"], "hop_p50_ms", "hop_p99_ms", "evt_hop_p50_ms", "wall_ms_per_task")
    _positive(hop["floor"], "hop_p50_ms", "hop_p99_ms")
    _positive(hop["ratios"], "hop_p50", "hop_p99", "evt_hop_p50", "wall_per_task_over_hop_p50")

    start = workloads["start"]
    assert start["conveyor"]["runs"] == report["sizes"]["start_runs"]
    _positive(start["conveyor"], "p50_ms", "p99_ms", "requested_to_dispatched_p50_ms")
    _positive(start["ratios"], "p50", "p99")

    by_workers = workloads["throughput"]["by_workers"]
    assert [t["workers"] for t in by_workers] == report["sizes"]["tput_workers"]
    for entry in by_workers:
        _positive(entry["conveyor"], "tasks_per_s", "runs_per_s", "runs_in_window")
        _positive(entry["conveyor"]["burst"], "runs_per_s", "wall_s", "run_latency_p50_ms")
        _positive(entry["floor"], "pipeline_results_per_s")
        _positive(entry["ratios"], "tasks_per_s", "burst_runs_per_s")
        _positive(entry["conveyor"]["dispatch_to_start"], "tasks", "p50_ms", "max_ms")

    fanout = workloads["fanout"]["conveyor"]
    assert sorted(fanout, key=int) == [str(n) for n in report["sizes"]["fanout_sizes"]]
    for entry in fanout.values():
        assert "error" not in entry, entry
        _positive(entry, "wall_s", "tasks_per_s", "orchestrator_peak_rss_mib")
        assert entry["status_reply"]["ok"] is True

    growth = workloads["growth"]
    assert growth["conveyor"]["seeded"]["stored_runs"] >= report["sizes"]["growth_runs"]
    assert growth["conveyor"]["seed"]["processed_ids"] == 7 * report["sizes"]["growth_runs"]
    _positive(growth["conveyor"]["empty"], "hop_p50_ms", "wall_ms_per_task")
    _positive(growth["conveyor"]["seeded"], "hop_p50_ms", "wall_ms_per_task")
    _positive(growth["ratios"], "hop_p50", "wall_per_task")

    recovery = workloads["recovery"]["conveyor"]
    assert len(recovery["samples"]) == report["sizes"]["recovery_repeats"]
    for sample in recovery["samples"]:
        assert sample["status"] == "succeeded"
        _positive(sample, "first_transition_ms", "api_serving_ms", "run_finished_ms")

    assert {t["target"].split(" ")[0] for t in report["targets"]} >= {"hop", "throughput"}
    assert "foreign_cores_avg" in next(iter(report["noise"].values()))


def test_foundation_benchmark_writes_json_with_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "results" / "foundation.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.foundation",
            "--chain",
            "3",
            "--fanout",
            "5",
            "--repeat",
            "1",
            "--floor-n",
            "20",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| measure | value |" in result.stdout

    report = json.loads(out.read_text())
    assert set(report) >= {"date", "environment", "config", "floor", "chain", "fanout", "ratios"}
    chain = report["chain"]
    assert len(chain["runs"]) == 1 and chain["hops"] == 2
    _positive(chain, "ms_per_task_median", "hop_p50_ms", "hop_p99_ms")
    _positive(report["fanout"], "wall_s_median", "tasks_per_s_median")
    _positive(report["floor"], "hop_p50_ms", "hop_p99_ms", "publish_async_msgs_per_s")
