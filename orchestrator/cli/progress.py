"""Live progress of a run for a person waiting on it.

On a terminal: a live table (rich) with each node's state, attempts, mapped-children counts and
the elapsed time. Elsewhere (CI, pipes): one line per node state change, so logs stay readable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

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


def node_text(node: dict[str, Any]) -> str:
    text = str(node["status"])
    children = node.get("children")
    if children:
        done = children.get("succeeded", 0)
        text += f" ({done}/{children['total']} done"
        if children.get("failed"):
            text += f", {children['failed']} failed"
        text += ")"
    if node.get("attempts", 0) > 1 and not children:
        text += f" (attempt {node['attempts']})"
    return text


class Progress:
    def __init__(self, run_id: str, workflow: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.console = Console(file=self.stream)
        self.live_mode = self.console.is_terminal
        self.run_id = run_id
        self.workflow = workflow
        self.started = time.monotonic()
        self._seen: dict[str, str] = {}
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        self._line(f"run {self.run_id} of {self.workflow}: requested")
        if self.live_mode:
            self._live = Live(self._table(None), console=self.console, refresh_per_second=10)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, status: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(self._table(status))
            return
        for name, node in status["nodes"].items():
            text = node_text(node)
            if self._seen.get(name) != text:
                self._seen[name] = text
                self._line(f"  {name}: {text}")

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.2f}s] {text}", file=self.stream, flush=True)

    def _table(self, status: dict[str, Any] | None) -> Table:
        elapsed = time.monotonic() - self.started
        state = status["status"] if status else "pending"
        table = Table(
            title=f"{self.workflow} · {self.run_id} · {state} · {elapsed:.1f}s",
            title_justify="left",
        )
        table.add_column("node")
        table.add_column("state")
        for name, node in (status or {}).get("nodes", {}).items():
            table.add_row(name, f"[{_STYLE.get(node['status'], '')}]{node_text(node)}[/]")
        return table


def summary(status: dict[str, Any]) -> str:
    """The human-readable end of a run: its status, then its output or its error."""
    lines = [f"run {status['run_id']} {status['status']}"]
    if status["status"] == "succeeded":
        lines.append("output: " + json.dumps(status["output"], indent=2, default=str))
    elif status.get("error"):
        error = status["error"]
        where = f" at node {error['node_id']!r}" if error.get("node_id") else ""
        lines.append(f"error{where}: {error.get('type')}: {error.get('message')}")
    return "\n".join(lines)
