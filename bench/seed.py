"""Fill an orchestrator store with N finished runs, fast: the `growth` workload's history.

    .venv/bin/python -m bench.seed --db /tmp/conveyor.db --runs 1000000

Each seeded run is what a finished `bench_small` run (3 no-op tasks, one attempt each) leaves
in the store: its header row in `runs`, one row per node in `nodes`, and the ids of the 7
events the orchestrator applied for it in `processed` (the `run.requested` id — a random UUID,
as the client makes it — and `task.started` / `task.completed` per node, as workers make them).
Run ids are made the way `events.ids.new_run_id` makes them (a millisecond prefix that sorts by
creation, then 64 random bits), one millisecond apart, ending a day before now.

The schema is the store's own: `Store.open` creates it, so the seed follows `orchestrator/
store.py` as it changes. The rows are the JSON of the real state classes (`RunState`,
`NodeState`, `Attempt`), rendered once as templates and filled per run by string
substitution; then inserted with `executemany` in chunks, without a journal (a seed that
fails is simply made again), and the file is switched to WAL as the store expects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from orchestrator.core.state import Attempt, NodeState, RunState
from orchestrator.core.statuses import NodeStatus, RunStatus
from orchestrator.runtime.store import Store

WORKFLOW = "bench_small"
NODE_IDS = ("noop", "noop_2", "noop_3")
CHUNK = 20_000
# Placeholders replaced per run (they cannot occur in the rendered JSON otherwise).
_RUN, _T0 = "@@RUN@@", 1111111111.25
_WORKER = "seed-worker"


def _templates(version: int) -> tuple[str, list[tuple[str, str]]]:
    """The header JSON and (node key, node JSON) of one finished run, with placeholders."""
    nodes: dict[str, NodeState] = {}
    for index, node_id in enumerate(NODE_IDS):
        base = _T0 + index * 0.004
        nodes[node_id] = NodeState(
            key=node_id,
            node_id=node_id,
            status=NodeStatus.SUCCEEDED,
            attempt=1,
            attempts=[
                Attempt(
                    attempt=1,
                    status=NodeStatus.SUCCEEDED,
                    dispatched_at=base,
                    started_at=base + 0.001,
                    finished_at=base + 0.003,
                    worker=_WORKER,
                )
            ],
            input={"x": index},
            output=index + 1,
        )
    run = RunState(
        run_id=_RUN,
        workflow=WORKFLOW,
        version=version,
        status=RunStatus.SUCCEEDED,
        input={"start": 0},
        created_at=_T0,
        updated_at=_T0 + 0.012,
        output=len(NODE_IDS),
        finished_at=_T0 + 0.012,
        traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
        nodes=nodes,
        node_order=list(NODE_IDS),
    )
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    return dumps(run.header_dict()), [(k, dumps(n.to_dict())) for k, n in nodes.items()]


def _fill(template: str, run_id: str, t0: float) -> str:
    # Every timestamp of the run is t0 + a small offset: shift them all by one substitution
    # of the template's integer part, which keeps the fractions (offsets) as rendered.
    return template.replace(_RUN, run_id).replace(str(int(_T0)), str(int(t0)))


def _rows(
    count: int, end_s: float, version: int
) -> Iterator[tuple[list[tuple[object, ...]], list[tuple[str, str, str]], list[tuple[str]]]]:
    header, nodes = _templates(version)
    start_ms = int(end_s * 1000) - count
    runs: list[tuple[object, ...]] = []
    node_rows: list[tuple[str, str, str]] = []
    processed: list[tuple[str]] = []
    for i in range(count):
        ms = start_ms + i
        run_id = f"{ms:012x}{os.urandom(8).hex()}"
        t0 = ms / 1000
        # Keep the fractional part of the template's times: t0's integer second + offsets.
        created = int(t0) + (_T0 - int(_T0))
        runs.append(
            (
                run_id,
                WORKFLOW,
                version,
                NodeStatus.SUCCEEDED,
                created,
                created + 0.012,
                _fill(header, run_id, t0),
            )
        )
        for key, data in nodes:
            node_rows.append((run_id, key, _fill(data, run_id, t0)))
        processed.append((uuid.uuid4().hex,))
        for node_id in NODE_IDS:
            processed.append((f"{run_id}:{node_id}:1:started",))
            processed.append((f"{run_id}:{node_id}:1:completed",))
        if len(runs) >= CHUNK:
            yield runs, node_rows, processed
            runs, node_rows, processed = [], [], []
    if runs:
        yield runs, node_rows, processed


async def _create_schema(path: Path) -> None:
    store = await Store.open(path)
    await store.close()


def seed(path: Path, runs: int, *, version: int = 1, progress: bool = False) -> dict[str, float]:
    """Create `path` (replacing it) holding `runs` finished runs; returns timings and size."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    asyncio.run(_create_schema(path))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1048576")  # 1 GiB
        done = 0
        for run_rows, node_rows, processed in _rows(runs, time.time() - 86_400, version):
            db.execute("BEGIN")
            db.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?)", run_rows)
            db.executemany("INSERT INTO nodes (run_id, key, data) VALUES (?,?,?)", node_rows)
            db.executemany("INSERT OR IGNORE INTO processed (event_id) VALUES (?)", processed)
            db.execute("COMMIT")
            done += len(run_rows)
            if progress and done % 200_000 < CHUNK:
                elapsed = time.perf_counter() - started
                print(f"seed: {done} runs in {elapsed:.0f}s", file=sys.stderr, flush=True)
        db.execute("PRAGMA journal_mode=WAL")
        counts = {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("runs", "nodes", "processed")
        }
    finally:
        db.close()
    return {
        "runs": counts["runs"],
        "nodes": counts["nodes"],
        "processed_ids": counts["processed"],
        "seconds": round(time.perf_counter() - started, 1),
        "file_mb": round(path.stat().st_size / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__)
    parser.add_argument("--db", required=True, help="the store file to create (replaced)")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--version", type=int, default=1, help="bench_small's spec version")
    args = parser.parse_args(argv)
    print(json.dumps(seed(Path(args.db), args.runs, version=args.version, progress=True)))


if __name__ == "__main__":
    main()
