"""Registered workflows as the API shows them: versions, the DAG with a layered layout,
schedules with their next instants, event triggers, and outbound webhooks without secrets.

The layout's columns are computed here (pure, from the compiled spec) rather than in the
browser so every client draws the same picture; the browser only orders nodes within a column.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from orchestrator.core.compiler import CompiledSpec
from orchestrator.core.cron import next_instants
from orchestrator.core.spec import NodeSpec, Notify, WorkflowSpec
from orchestrator.runtime.registry import Registry

from .models import Dag, DagEdge, DagNode, NotifyInfo, ScheduleInfo

# The registry's key layout (see orchestrator/registry.py): wf.<name>.v<N> per version.
NEXT_INSTANTS = 3
REDACTED = "<redacted>"


def _kind_and_label(node: NodeSpec) -> tuple[str, str]:
    if node.sleep is not None:
        if node.sleep.seconds is not None:
            return (
                "sleep",
                f"sleep {node.sleep.seconds}{'s' if _number(node.sleep.seconds) else ''}",
            )
        return "sleep", f"sleep until {node.sleep.until}"
    if node.wait_for is not None:
        return "wait_for", f"wait for {node.wait_for.type}"
    if node.workflow is not None:
        return "workflow", f"run {node.workflow.name}"
    return "task", node.task or ""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def dag_of(compiled: CompiledSpec) -> Dag:
    """Nodes in topological order with their column (the longest path from a root)."""
    depth: dict[str, int] = {}
    for node_id in compiled.order:
        deps = compiled.nodes[node_id].deps
        depth[node_id] = 1 + max((depth[d] for d in deps), default=-1)
    nodes: list[DagNode] = []
    edges: list[DagEdge] = []
    for node_id in compiled.order:
        node = compiled.nodes[node_id]
        spec = node.spec
        kind, label = _kind_and_label(spec)
        nodes.append(
            DagNode(
                id=node_id,
                kind=kind,
                task=spec.task,
                label=label,
                queue=spec.queue,
                depth=depth[node_id],
                deps=sorted(node.deps),
                mapped=spec.map is not None,
                map_param=spec.map.param if spec.map is not None else None,
                conditional=spec.when is not None,
                max_attempts=spec.retry.max_attempts,
                timeout_s=spec.timeout_s,
            )
        )
        edges.extend(DagEdge(source=dep, target=node_id) for dep in sorted(node.deps))
    return Dag(nodes=nodes, edges=edges, depth=1 + max(depth.values(), default=-1))


def schedules_of(spec: WorkflowSpec, now: float | None = None) -> list[ScheduleInfo]:
    now = time.time() if now is None else now
    return [
        ScheduleInfo(
            cron=s.cron,
            timezone=s.timezone,
            catchup=s.catchup,
            input=s.input,
            next_at=next_instants(s, now, NEXT_INSTANTS),
        )
        for s in spec.schedules
    ]


def safe_url(url: str) -> str:
    """Scheme, host and path: credentials hide in user info and query strings."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def notify_of(spec: WorkflowSpec) -> list[NotifyInfo]:
    return [
        NotifyInfo(url=safe_url(n.url), on=list(n.on), signed=n.secret is not None)
        for n in spec.notify
    ]


def redacted_spec(spec: WorkflowSpec) -> dict[str, Any]:
    """The spec as JSON, with webhook secrets and URL credentials replaced (DESIGN.md 8:
    secrets never appear in the dashboard)."""
    body = spec.model_dump(mode="json")
    body["notify"] = [_redacted_notify(n) for n in spec.notify]
    return body


def _redacted_notify(notify: Notify) -> dict[str, Any]:
    body = notify.model_dump(mode="json")
    body["url"] = safe_url(notify.url)
    if notify.secret is not None:
        body["secret"] = REDACTED
    return body


async def versions_of(registry: Registry, name: str) -> list[int]:
    """Every stored version of `name`, ascending."""
    return await registry.versions(name)
