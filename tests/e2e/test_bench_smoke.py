"""`python -m bench.foundation` at a tiny size: it runs end to end and writes well-formed JSON.

A smoke test, not a benchmark: no timing thresholds, only that every number is there and
positive (benchmarks are never timing assertions).
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
    assert set(report) >= {
        "date",
        "environment",
        "config",
        "floor",
        "chain",
        "chain_breakdown",
        "fanout",
        "ratios",
    }
    env = report["environment"]
    assert env["python"] and env["nats_server"] and env["nats_py"]
    assert env["cores"] >= 1
    assert report["config"]["chain_tasks"] == 3 and report["config"]["fanout_items"] == 5

    chain = report["chain"]
    assert len(chain["runs"]) == 1 and chain["hops"] == 2
    _positive(chain, "ms_per_task_median", "hop_p50_ms", "hop_p99_ms")
    _positive(chain["runs"][0], "wall_s", "ms_per_task", "client_wall_s")

    phases = report["chain_breakdown"]["phases"]
    assert len(phases) == 5
    for phase in phases.values():
        assert math.isfinite(phase["p50_ms"]) and math.isfinite(phase["p90_ms"])

    fanout = report["fanout"]
    assert fanout["items"] == 5 and len(fanout["runs"]) == 1
    _positive(fanout, "wall_s_median", "wall_s_min", "wall_s_max", "tasks_per_s_median")

    floor = report["floor"]
    assert floor["hops"] == 20
    _positive(floor, "hop_p50_ms", "hop_p99_ms", "publish_async_msgs_per_s", "fetch_ack_msgs_per_s")

    _positive(
        report["ratios"],
        "chain_ms_per_task_over_floor_hop_p50",
        "hop_p50_over_floor_p50",
        "hop_p99_over_floor_p99",
    )
