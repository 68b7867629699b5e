"""A workflow whose tasks are served in two languages: Python, then Node.js, then Python.

    clean (Python)  ->  word_count (Node.js, examples/node-worker)  ->  summarise (Python)

`word_count` is declared here, with its signature and its queue, so the workflow can call it
like any other task; `external=True` says a worker elsewhere serves it (a Node.js worker on
queue `node`), so Python workers for this module never pull it (examples/node-worker/README.md
has the whole recipe, NATS and orchestrator included):

    conveyor dev examples/polyglot.py            # or: conveyor worker examples/polyglot.py
    node examples/node-worker/worker.mjs
    conveyor run polyglot --input '{"text": "<p>Hello, <b>world</b>!</p>"}' --wait
"""

from __future__ import annotations

import html
import re
from typing import Any

from orchestrator import workflow
from workers import task


@task
def clean(text: str) -> str:
    """Strip HTML tags and entities, collapse whitespace."""
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text)).split())


@task(queue="node", external=True)
def word_count(text: str) -> dict[str, Any]:
    """Served by examples/node-worker/worker.mjs: {"words", "unique", "longest", "top"}."""
    raise NotImplementedError("word_count is served by the Node.js worker in examples/node-worker")


@task
def summarise(stats: dict[str, Any], title: str) -> str:
    top = ", ".join(f"{t['word']} x{t['count']}" for t in stats["top"])
    return (
        f"{title}: {stats['words']} words, {stats['unique']} distinct, "
        f"longest {stats['longest']!r}; most frequent: {top or 'none'}"
    )


@workflow
def polyglot(text: str, title: str = "text") -> dict[str, Any]:
    cleaned = clean(text)
    stats = word_count(cleaned)
    return {"stats": stats, "summary": summarise(stats, title)}
