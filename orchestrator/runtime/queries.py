"""Read-only SQL over the store's committed state, for the API (`Store.reader`).

The store keeps one row per run (`runs`, its header as JSON) and one row per node or mapped
child (`nodes`, keyed `<id>` or `<id>[<index>]`, its state as JSON). The queries here are what
the dashboard needs to stay fast on a run with 10,000 mapped children:

- a run's detail reads the header and the parent rows only, and has sqlite count the children
  by status (`json_extract` in C) instead of parsing 10,000 rows in Python. It returns exactly
  what `run_status(store.read_run(id))` returns (a test pins the two together); the slow path
  stays available as `run_detail_full` for that comparison.
- children are paged by index; runs by keyset (`created_at`, `run_id`) so a page costs the
  same at the end of a million runs as at the start (OFFSET would scan what it skips).

Reads are separate statements on a shared autocommit connection, so two of them may straddle
an engine commit. The header is read first: a later statement can only be newer, so a finished
header never comes with unfinished counts (the opposite skew heals on the next event).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from orchestrator.core.state import NodeState, RunState
from orchestrator.core.status import MAX_LISTED_FAILURES, run_status, waiting
from orchestrator.core.statuses import NodeStatus
from orchestrator.runtime.store import Store
from orchestrator.runtime.workers import WorkerDirectory


class BadCursor(ValueError):
    """A pagination cursor that this API did not hand out."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    workflow: str | None = None
    statuses: Sequence[str] = ()
    created_after: float | None = None
    created_before: float | None = None

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.workflow:
            clauses.append("workflow = ?")
            args.append(self.workflow)
        if self.statuses:
            clauses.append(f"status IN ({','.join('?' * len(self.statuses))})")
            args.extend(self.statuses)
        if self.created_after is not None:
            clauses.append("created_at >= ?")
            args.append(self.created_after)
        if self.created_before is not None:
            clauses.append("created_at < ?")
            args.append(self.created_before)
        return clauses, args


def encode_cursor(created_at: float, run_id: str) -> str:
    raw = json.dumps([created_at, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(raw)
        if not isinstance(run_id, str) or isinstance(created_at, bool):
            raise TypeError("bad types")
        return float(created_at), run_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadCursor(
            f"invalid cursor {cursor[:40]!r}: pass back a next_cursor unchanged"
        ) from exc


def _summary(header: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "workflow", "version", "status", "created_at", "updated_at")
    out = {k: header[k] for k in keys}
    out["finished_at"] = header.get("finished_at")
    out["error"] = header.get("error")
    out["idempotency_key"] = header.get("idempotency_key")
    out["trigger"] = header.get("trigger")
    return out


def _child_range(node_id: str) -> tuple[str, str]:
    # Children are keyed "<id>[<n>]": every such key sorts in [<id>[, <id>\) ('\' follows '['),
    # which the primary key (run_id, key) scans directly. Node ids hold no '[' themselves.
    return f"{node_id}[", f"{node_id}\\"


class Queries:
    def __init__(self, store: Store, workers: WorkerDirectory | None = None) -> None:
        self.store = store
        # Given, a run's detail says which of its nodes wait for a worker none could be.
        self.workers = workers

    @property
    def db(self) -> aiosqlite.Connection:
        return self.store.reader

    # ---- runs ------------------------------------------------------------------------------
    async def list_runs(
        self, filters: RunFilter, *, limit: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; one extra row tells whether there is a next page."""
        clauses, args = filters.where()
        if cursor is not None:
            created_at, run_id = decode_cursor(cursor)
            clauses.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
            args += [created_at, created_at, run_id]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT header FROM runs {where} ORDER BY created_at DESC, run_id DESC LIMIT ?"
        async with self.db.execute(sql, (*args, limit + 1)) as rows:
            headers = [json.loads(r[0]) async for r in rows]
        page = [_summary(h) for h in headers[:limit]]
        next_cursor = None
        if len(headers) > limit:
            last = page[-1]
            next_cursor = encode_cursor(last["created_at"], last["run_id"])
        return page, next_cursor

    async def count_runs(self, filters: RunFilter) -> dict[str, int]:
        clauses, args = filters.where()
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT status, COUNT(*) FROM runs {where} GROUP BY status ORDER BY status"
        async with self.db.execute(sql, args) as rows:
            return {r[0]: int(r[1]) async for r in rows}

    async def runs_by_workflow(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        async with self.db.execute(
            "SELECT workflow, status, COUNT(*) FROM runs GROUP BY workflow, status"
        ) as rows:
            async for workflow, status, count in rows:
                out.setdefault(workflow, {})[status] = int(count)
        return out

    async def last_run(self, workflow: str) -> dict[str, Any] | None:
        async with self.db.execute(
            "SELECT header FROM runs WHERE workflow = ? ORDER BY created_at DESC LIMIT 1",
            (workflow,),
        ) as rows:
            row = await rows.fetchone()
        return _summary(json.loads(row[0])) if row else None

    async def run_header(self, run_id: str) -> dict[str, Any] | None:
        async with self.db.execute("SELECT header FROM runs WHERE run_id = ?", (run_id,)) as rows:
            row = await rows.fetchone()
        return json.loads(row[0]) if row else None

    async def run_detail(self, run_id: str, *, include_io: bool = True) -> dict[str, Any] | None:
        """`run_status` of the run, computed without loading its mapped children."""
        header = await self.run_header(run_id)
        if header is None:
            return None
        async with self.db.execute(
            "SELECT data FROM nodes WHERE run_id = ? AND instr(key, '[') = 0", (run_id,)
        ) as rows:
            parents = [NodeState.from_dict(json.loads(r[0])) async for r in rows]
        status = run_status(RunState.from_parts(header, parents), include_io=include_io)
        mapped = [n.key for n in parents if n.children]  # children rows exist only then
        for node_id in mapped:
            counts, attempts, with_errors = await self._child_summary(run_id, node_id)
            if not counts:
                continue
            entry = status["nodes"][node_id]
            entry["children"] = {
                "total": entry.get("children", {}).get("total", sum(counts.values())),
                **dict(sorted(counts.items())),
            }
            entry["attempts"] = attempts
            if with_errors:
                entry["failed_children"] = await self._child_failures(run_id, node_id)
        await self.locate_waits(status)
        if self.workers is not None:
            await self.workers.note_unserved(status, self.oldest_dispatched_child)
        return status

    async def run_detail_full(self, run_id: str) -> dict[str, Any] | None:
        """The reference: every row loaded and summarised in Python."""
        run = await self.read_run(run_id)
        if run is None:
            return None
        status = run_status(run)
        await self.locate_waits(status)
        return status

    # ---- flow control ----------------------------------------------------------------------
    async def locate_waits(self, status: dict[str, Any]) -> None:
        """Add, to what waits behind a limit whose limiter is in this store, its place in the
        queue (docs/flow-control.md). A limiter on another partition is asked by the status
        API (`ApiService`); the dashboard's projection shows what it holds."""
        waits = [status.get("waiting"), *(n.get("waiting") for n in status["nodes"].values())]
        for wait in waits:
            if wait and "position" not in wait:
                found = await self.flow_position(wait["limiter"], wait["request"])
                if found is not None:
                    wait.update(found)

    async def node_waiting(self, node: NodeState) -> dict[str, Any] | None:
        """A queued node's (or child's) `waiting`, with its place in line when known here."""
        if node.status != NodeStatus.QUEUED or not node.gates:
            return None
        wait = waiting(node.gates[-1])
        wait.update(await self.flow_position(wait["limiter"], wait["request"]) or {})
        return wait

    async def flow_position(self, limiter: str, request: str) -> dict[str, Any] | None:
        """`position` of `request` in `limiter`'s queue (1: next), how many hold the limit, and
        for a rate limit `until` (when the next token frees); None when the limiter is not in
        this store or the request is not queued there."""
        async with self.db.execute(
            "SELECT header FROM flow_entities WHERE entity_id = ?", (limiter,)
        ) as rows:
            row = await rows.fetchone()
        async with self.db.execute(
            "SELECT data FROM flow_entries WHERE entity_id = ? AND entry_id = ?",
            (limiter, request),
        ) as rows:
            mine = await rows.fetchone()
        if row is None or mine is None:
            return None
        header, entry = json.loads(row[0]), json.loads(mine[0])
        if entry.get("holding"):
            return None
        vt, seq = entry["rank"]
        async with self.db.execute(
            "SELECT COUNT(*) FROM flow_entries WHERE entity_id = ?"
            " AND json_extract(data, '$.holding') = 0 AND (json_extract(data, '$.rank[0]') < ?"
            " OR (json_extract(data, '$.rank[0]') = ? AND json_extract(data, '$.rank[1]') < ?))",
            (limiter, vt, vt, seq),
        ) as rows:
            ahead = await rows.fetchone()
        return {
            "position": 1 + int(ahead[0] if ahead else 0),
            "holding": header["holding"],
            "queued": header["waiting"],
            "until": header.get("timer_due"),
        }

    async def flows(self) -> list[dict[str, Any]]:
        """Every limiter and collector holding, queueing or collecting: its header (limit,
        counts, key, the next timer)."""
        async with self.db.execute("SELECT header FROM flow_entities WHERE active = 1") as rows:
            headers = [json.loads(r[0]) async for r in rows]
        return sorted(
            headers, key=lambda h: (h["kind"], h.get("name") or h.get("workflow"), h["key"])
        )

    async def read_run(self, run_id: str) -> RunState | None:
        """The whole run, every node and mapped child loaded (for replays and comparisons)."""
        header = await self.run_header(run_id)
        if header is None:
            return None
        async with self.db.execute("SELECT data FROM nodes WHERE run_id = ?", (run_id,)) as rows:
            nodes = [NodeState.from_dict(json.loads(r[0])) async for r in rows]
        return RunState.from_parts(header, nodes)

    async def child_counts(self, run_id: str, node_id: str) -> Counter[str]:
        """Children of a mapped node by status."""
        counts, _, _ = await self._child_summary(run_id, node_id)
        return counts

    async def oldest_dispatched_child(self, run_id: str, node_id: str) -> float | None:
        """When the longest-waiting child of a mapped node still dispatched (not started) was
        dispatched."""
        low, high = _child_range(node_id)
        async with self.db.execute(
            "SELECT MIN(json_extract(data, '$.attempts[#-1].dispatched_at')) FROM nodes"
            " WHERE run_id = ? AND key > ? AND key < ?"
            " AND json_extract(data, '$.status') = 'dispatched'",
            (run_id, low, high),
        ) as rows:
            row = await rows.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def _child_summary(self, run_id: str, node_id: str) -> tuple[Counter[str], int, int]:
        """Children by status, their attempts in total, and how many carry an error — one scan
        of the run's child rows."""
        low, high = _child_range(node_id)
        counts: Counter[str] = Counter()
        attempts = errors = 0
        async with self.db.execute(
            "SELECT json_extract(data, '$.status'), COUNT(*),"
            " SUM(json_array_length(data, '$.attempts')),"
            " SUM(json_type(data, '$.error') = 'object')"
            " FROM nodes WHERE run_id = ? AND key > ? AND key < ? GROUP BY 1",
            (run_id, low, high),
        ) as rows:
            async for status, count, tried, failed in rows:
                counts[status] = int(count)
                attempts += int(tried or 0)
                errors += int(failed or 0)
        return counts, attempts, errors

    async def child_spans(self, run_id: str, node_id: str) -> list[tuple[float, float | None]]:
        """When each child of a mapped node ran: (first start, or dispatch; last finish, None
        while it runs), children that never ran left out. Two floats a row, read by sqlite: a
        10,000-child timeline costs one scan, not 10,000 parsed rows."""
        low, high = _child_range(node_id)
        async with self.db.execute(
            "SELECT coalesce(json_extract(data, '$.attempts[0].started_at'),"
            " json_extract(data, '$.attempts[0].dispatched_at')),"
            " json_extract(data, '$.attempts[#-1].finished_at')"
            " FROM nodes WHERE run_id = ? AND key > ? AND key < ?",
            (run_id, low, high),
        ) as rows:
            return [(float(start), end) async for start, end in rows if start is not None]

    async def _child_failures(self, run_id: str, node_id: str) -> list[dict[str, Any]]:
        low, high = _child_range(node_id)
        async with self.db.execute(
            "SELECT key, json_extract(data, '$.error') FROM nodes"
            " WHERE run_id = ? AND key > ? AND key < ?"
            " AND json_type(data, '$.error') = 'object'"
            " ORDER BY json_extract(data, '$.index') LIMIT ?",
            (run_id, low, high, MAX_LISTED_FAILURES),
        ) as rows:
            return [{"key": key, "error": json.loads(error)} async for key, error in rows]

    # ---- nodes -----------------------------------------------------------------------------
    async def node(self, run_id: str, key: str) -> NodeState | None:
        async with self.db.execute(
            "SELECT data FROM nodes WHERE run_id = ? AND key = ?", (run_id, key)
        ) as rows:
            row = await rows.fetchone()
        return NodeState.from_dict(json.loads(row[0])) if row else None

    async def children(
        self,
        run_id: str,
        node_id: str,
        *,
        after: int,
        limit: int,
        status: str | None = None,
    ) -> tuple[list[NodeState], int | None]:
        """Children of a mapped node with index > `after`, in index order; and the `after` of
        the next page (None on the last)."""
        low, high = _child_range(node_id)
        sql = (
            "SELECT data FROM nodes WHERE run_id = ? AND key > ? AND key < ?"
            " AND json_extract(data, '$.index') > ?"
        )
        args: list[Any] = [run_id, low, high, after]
        if status:
            sql += " AND json_extract(data, '$.status') = ?"
            args.append(status)
        sql += " ORDER BY json_extract(data, '$.index') LIMIT ?"
        async with self.db.execute(sql, (*args, limit + 1)) as rows:
            nodes = [NodeState.from_dict(json.loads(r[0])) async for r in rows]
        page = nodes[:limit]
        next_after = page[-1].index if len(nodes) > limit and page else None
        return page, next_after
