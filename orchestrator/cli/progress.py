"""Live progress of a run for a person waiting on it (`run --wait`, `retry --wait`, `dev --run`).

On a terminal: a `rich` Live display fitted to the terminal at every refresh, whatever the size
of the run — a header (workflow, status, run id) and a summary line (done, running and failed of
the total, the elapsed time, the nodes running now) that never wrap, then one row per node when
they all fit, else only the failed and running ones and a count of the rest. Elsewhere (CI,
pipes): for a small run, a line per node state change; for a big one, a summary line at each
tenth of the way and a line per failed node (capped), so the output stays a bounded number of
lines. Both say when a node waits for a task that no running worker serves.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, TextIO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from orchestrator.core.statuses import RUN_TERMINAL, NodeStatus

_STYLE = {
    "waiting": "dim",
    "dispatched": "cyan",
    "running": "yellow",
    "retrying": "magenta",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "dim",
    "cancelled": "red",
}
_DONE = frozenset({NodeStatus.SUCCEEDED, NodeStatus.SKIPPED})
_FAILED = frozenset({NodeStatus.FAILED, NodeStatus.CANCELLED})
_ACTIVE = frozenset({NodeStatus.DISPATCHED, NodeStatus.RUNNING, NodeStatus.RETRYING})
# Which rows a big run shows when not all fit: failures first, then what runs now.
_SHOWN_FIRST = (
    NodeStatus.FAILED,
    NodeStatus.RETRYING,
    NodeStatus.RUNNING,
    NodeStatus.DISPATCHED,
    NodeStatus.CANCELLED,
)
# Without a terminal: up to this many nodes, a line per node change; above, summary lines.
DETAILED_UP_TO = 20
MAX_FAILURE_LINES = 20
STEPS = 10  # summary lines at each tenth of the way


def node_text(node: Mapping[str, Any], max_attempts: int | None = None) -> str:
    """A node's state in a few words: `running (3/6 done)`, `retrying (attempt 2 of 3)`.

    Attempts count since the run's last manual retry (what the retry policy's max counts)."""
    text = str(node["status"])
    children = node.get("children")
    if children:
        done = children.get("succeeded", 0)
        text += f" ({done}/{children['total']} done"
        if children.get("failed"):
            text += f", {children['failed']} failed"
        return text + ")"
    attempt = node.get("attempts_since_retry", node.get("attempts", 0))
    if attempt > 1 or (attempt == 1 and max_attempts and node["status"] in _FAILED):
        text += f" (attempt {attempt}" + (f" of {max_attempts})" if max_attempts else ")")
    return text


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Tally:
    """A run's nodes counted by what a person cares about."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        nodes: Mapping[str, Mapping[str, Any]] = status.get("nodes", {})
        by_status = Counter(str(n["status"]) for n in nodes.values())
        self.total = len(nodes)
        self.done = sum(by_status[s] for s in _DONE)
        self.failed = by_status[NodeStatus.FAILED]
        self.cancelled = by_status[NodeStatus.CANCELLED]
        self.running = [k for k, n in nodes.items() if n["status"] in _ACTIVE]

    def counts(self, elapsed: float) -> str:
        cancelled = f" · {self.cancelled} cancelled" if self.cancelled else ""
        return (
            f"{self.done}/{self.total} done · {len(self.running)} running · "
            f"{self.failed} failed{cancelled} · {duration_text(elapsed)}"
        )

    def now(self) -> str:
        return "now: " + ", ".join(self.running) if self.running else ""

    def line(self, elapsed: float) -> str:
        return " · ".join(filter(None, (self.counts(elapsed), self.now())))


class RunView:
    """The live display: rendered by rich at each refresh, fitted to the console's size then.

    `update` is called from the event loop and rendering happens on rich's refresh thread: the
    view only swaps in the latest status (one reference assignment)."""

    def __init__(
        self, run_id: str, workflow: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.clock = clock
        self.started = clock()
        self.status: Mapping[str, Any] | None = None
        self.max_attempts: Mapping[str, int] = {}

    def update(self, status: Mapping[str, Any]) -> None:
        self.status = status

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, height = options.max_width, options.height or options.max_height
        yield from self.lines(width, height)

    def lines(self, width: int, height: int) -> Iterator[Text]:
        status = self.status or {"status": "requested", "nodes": {}}
        tally = Tally(status)
        elapsed = self.clock() - self.started
        header = Text.assemble(
            (self.workflow, "bold"),
            " · ",
            (str(status["status"]), _STYLE.get(str(status["status"]), "")),
            f" · run {self.run_id}",
        )
        yield _one_line(header, width)
        if height < 2:
            return
        # The running nodes go on the counts' line when they fit, else on a line of their own.
        line = tally.line(elapsed)
        separate = len(line) > width and bool(tally.running) and height >= 3
        yield _one_line(Text(tally.counts(elapsed) if separate else line), width)
        if separate:
            yield _one_line(Text(tally.now()), width)
        used = 3 if separate else 2
        yield from self._rows(status.get("nodes", {}), width, height - used)

    def _rows(
        self, nodes: Mapping[str, Mapping[str, Any]], width: int, room: int
    ) -> Iterator[Text]:
        """A row per node when they fit in `room` lines; else the failed and running ones
        first, then a line that counts the rest."""
        if room <= 0 or not nodes:
            return
        shown = list(nodes)
        if len(shown) > room:
            rank = {status: i for i, status in enumerate(_SHOWN_FIRST)}
            wanted = sorted(
                (rank[n["status"]], i, k)
                for i, (k, n) in enumerate(nodes.items())
                if n["status"] in rank
            )
            chosen = {k for _, _, k in wanted[: room - 1]}
            shown = [k for k in nodes if k in chosen]
        name_width = min(max(len(k) for k in shown) if shown else 0, max(8, width // 2))
        for key in shown:
            node = nodes[key]
            row = Text("  ")
            row.append(key[:name_width].ljust(name_width))
            row.append("  ")
            row.append(node_text(node, self.max_attempts.get(key)), _STYLE.get(node["status"], ""))
            if node.get("no_worker"):
                row.append(f" · {node['no_worker']['message']}", "yellow")
            yield _one_line(row, width)
        visible = set(shown)
        hidden = [node for key, node in nodes.items() if key not in visible]
        if hidden:
            counts = Counter(str(n["status"]) for n in hidden)
            what = ", ".join(f"{n} {s}" for s, n in counts.most_common())
            what = f"{len(hidden)} {'more' if shown else 'nodes'}: {what}"
            yield _one_line(Text(f"  … {what}" if shown else f"  {what}", "dim"), width)


def _one_line(text: Text, width: int) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.truncate(max(1, width), overflow="ellipsis")
    return text


class LineLog:
    """Progress as plain lines, for logs: bounded whatever the size of the run."""

    def __init__(self, stream: IO[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.max_attempts: Mapping[str, int] = {}
        self._seen: dict[str, tuple[str, int]] = {}
        self._step = -1
        self._failures = 0
        self._unserved_seen: set[str] = set()

    def line(self, text: str) -> None:
        elapsed = self.clock() - self.started
        print(f"[{elapsed:7.2f}s] {text}", file=self.stream, flush=True)

    def update(self, status: Mapping[str, Any]) -> None:
        nodes: Mapping[str, Mapping[str, Any]] = status["nodes"]
        self._unserved(nodes)
        if len(nodes) <= DETAILED_UP_TO:
            self._per_node(nodes)
            return
        tally = Tally(status)
        self._summarised(nodes, tally)
        if status["status"] in RUN_TERMINAL and self._step <= STEPS:
            self._step = STEPS + 1  # the last word: where the run ended
            self.line(tally.line(self.clock() - self.started))

    def _per_node(self, nodes: Mapping[str, Mapping[str, Any]]) -> None:
        for name, node in nodes.items():
            if node["status"] == NodeStatus.WAITING and name not in self._seen:
                continue  # not started yet: nothing to say
            children = node.get("children")
            if children:
                # A mapped node's counts are shown at each tenth of its children, not each change.
                done = STEPS * children.get("succeeded", 0) // max(1, children["total"])
                mark = (str(node["status"]), done + STEPS * bool(children.get("failed")))
            else:
                mark = (node_text(node), 0)
            if self._seen.get(name) != mark:
                self._seen[name] = mark
                self.line(f"  {name}: {node_text(node, self.max_attempts.get(name))}")

    def _unserved(self, nodes: Mapping[str, Mapping[str, Any]]) -> None:
        """Once per node (at most MAX_FAILURE_LINES): that no running worker serves its task."""
        for name, node in nodes.items():
            note = node.get("no_worker")
            if note and name not in self._unserved_seen:
                self._unserved_seen.add(name)
                if len(self._unserved_seen) <= MAX_FAILURE_LINES:
                    self.line(f"  {name}: {note['message']}")

    def _summarised(self, nodes: Mapping[str, Mapping[str, Any]], tally: Tally) -> None:
        for name, node in nodes.items():
            if node["status"] == NodeStatus.FAILED and name not in self._seen:
                self._seen[name] = (str(node["status"]), 0)
                self._failures += 1
                if self._failures <= MAX_FAILURE_LINES:
                    self.line(f"  {name}: {node_text(node, self.max_attempts.get(name))}")
        step = STEPS * tally.done // max(1, tally.total)
        if step > self._step:
            self._step = step
            self.line(tally.line(self.clock() - self.started))


class Progress:
    """`with Progress(...) as progress: ... progress.update(status)` — live on a terminal,
    lines elsewhere (both on stderr: stdout carries the run id and the result)."""

    def __init__(
        self,
        run_id: str,
        workflow: str,
        stream: TextIO | None = None,
        console: Console | None = None,
    ) -> None:
        self.console = console or Console(file=stream or sys.stderr)
        self.view = RunView(run_id, workflow)
        self.log = LineLog(self.console.file)
        self.run_id = run_id
        self.workflow = workflow
        self._live: Live | None = None

    @property
    def live_mode(self) -> bool:
        return self.console.is_terminal

    def set_max_attempts(self, max_attempts: Mapping[str, int]) -> None:
        """Each node's retry policy (from the workflow's spec), to say `attempt 2 of 3`."""
        self.view.max_attempts = self.log.max_attempts = max_attempts

    def __enter__(self) -> Progress:
        if not self.live_mode:  # (the live view's header says it)
            self.log.line(f"run {self.run_id} of {self.workflow}: requested")
        else:
            self._live = Live(
                console=self.console, get_renderable=lambda: self.view, refresh_per_second=8
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, status: Mapping[str, Any]) -> None:
        if self._live is not None:
            self.view.update(status)
            self._live.refresh()
        else:
            self.log.update(status)


def summary(status: Mapping[str, Any], max_attempts: Mapping[str, int] | None = None) -> str:
    """The human-readable end of a run: its status and active time, then its output or error."""
    ended = status["status"]
    took = status.get("duration_s")
    head = f"run {status['run_id']} {ended}"
    if took is not None:
        head += (" in " if ended == "succeeded" else " after ") + duration_text(took)
        if status.get("resumed_at"):
            head += " (active time: the wait before its retry is not counted)"
    lines = [head]
    if ended == "succeeded":
        lines.append("output: " + json.dumps(status["output"], indent=2, default=str))
    elif status.get("error"):
        error = status["error"]
        node_id = error.get("node_id")
        where = f" at node {node_id!r}" if node_id else ""
        line = f"error{where}: {error.get('type')}: {error.get('message')}"
        node = status.get("nodes", {}).get(node_id) if node_id else None
        if node is not None and not node.get("children"):
            limit = (max_attempts or {}).get(node_id)
            attempt = node.get("attempts_since_retry", node.get("attempts", 0))
            line += f" (attempt {attempt}" + (f" of {limit})" if limit else ")")
        lines.append(line)
    return "\n".join(lines)
