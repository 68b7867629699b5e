"""The API's pure helpers: DAG layering, cursors, event summaries, log filters, redaction."""

from __future__ import annotations

import pytest

from events.codec import encode
from events.envelope import CloudEvent
from events.models import (
    RUN_FAILED,
    TASK_COMPLETED,
    ErrorInfo,
    RunFailed,
    TaskCompleted,
)
from orchestrator.core.compiler import compile_spec
from orchestrator.http.catalog import dag_of, notify_of, redacted_spec
from orchestrator.http.live import summarise
from orchestrator.http.logs import node_matches
from orchestrator.runtime.queries import BadCursor, decode_cursor, encode_cursor
from tests.api import flows


def _spec(nodes: list[dict[str, object]]) -> dict[str, object]:
    return {"name": "g", "nodes": nodes}


def test_dag_columns_follow_the_longest_path_from_a_root() -> None:
    compiled = compile_spec(
        _spec(
            [
                {"id": "a", "task": "t"},
                {"id": "b", "task": "t", "inputs": {"x": "$.nodes.a"}},
                {"id": "c", "task": "t", "inputs": {"x": "$.nodes.b"}},
                # d depends on a (depth 1) and c (depth 2): its column is 3, not 2.
                {"id": "d", "task": "t", "inputs": {"x": "$.nodes.a", "y": "$.nodes.c"}},
                {"id": "lone", "task": "t"},
            ]
        )
    )
    dag = dag_of(compiled)
    assert {n.id: n.depth for n in dag.nodes} == {"a": 0, "b": 1, "c": 2, "d": 3, "lone": 0}
    assert dag.depth == 4
    assert {(e.source, e.target) for e in dag.edges} == {
        ("a", "b"),
        ("b", "c"),
        ("a", "d"),
        ("c", "d"),
    }
    assert [n.id for n in dag.nodes] == list(compiled.order)


def test_dag_describes_mapped_and_special_nodes() -> None:
    dag = dag_of(compile_spec(flows.report.spec))
    enrich = next(n for n in dag.nodes if n.id == "enrich")
    assert (enrich.mapped, enrich.map_param, enrich.kind, enrich.label) == (
        True,
        "x",
        "task",
        "enrich",
    )
    nightly = {n.id: n for n in dag_of(compile_spec(flows.nightly.spec)).nodes}
    assert (nightly["sleep"].kind, nightly["sleep"].label, nightly["sleep"].task) == (
        "sleep",
        "sleep 30s",
        None,
    )


def test_cursor_round_trip_and_rejections() -> None:
    cursor = encode_cursor(1795419617.1742997, "01a2075937933af7c34a6d729e76")
    assert decode_cursor(cursor) == (1795419617.1742997, "01a2075937933af7c34a6d729e76")
    assert "=" not in cursor  # safe in a query string as is
    for bad in ("", "garbage", "e30", "WzEsMl0", "WyJhIiwiYiJd", "W3RydWUsImEiXQ"):
        with pytest.raises(BadCursor):
            decode_cursor(bad)


def _wire(event_type: str, data: object, run_id: str) -> tuple[dict[str, str], bytes]:
    return encode(CloudEvent.create(event_type, "test", data, extensions={"runid": run_id}))


def test_event_summaries_carry_no_inputs_or_outputs() -> None:
    headers, body = _wire(
        TASK_COMPLETED,
        TaskCompleted(run_id="r1", node_id="enrich[3]", attempt=2, worker="w1", output=[1] * 999),
        "r1",
    )
    summary = summarise("ns.evt.0.task.completed.r1", headers, body)
    assert summary is not None
    assert {k: summary[k] for k in ("type", "run_id", "node_id", "attempt", "worker")} == {
        "type": "task.completed",
        "run_id": "r1",
        "node_id": "enrich[3]",
        "attempt": 2,
        "worker": "w1",
    }
    assert "output" not in summary and summary["id"] and summary["time"]


def test_event_summaries_keep_the_error_without_its_traceback() -> None:
    error = ErrorInfo(type="ValueError", message="bad", traceback="Traceback ...", retryable=False)
    headers, body = _wire(
        RUN_FAILED, RunFailed(run_id="r2", workflow="wf", version=3, error=error), "r2"
    )
    summary = summarise("ns.evt.0.run.failed.r2", headers, body)
    assert summary is not None
    assert summary["error"] == {"type": "ValueError", "message": "bad", "retryable": False}
    assert (summary["workflow"], summary["version"]) == ("wf", 3)


def test_malformed_events_are_skipped() -> None:
    assert summarise("ns.evt.0.task.completed.r", {}, b"not an event") is None


@pytest.mark.parametrize(
    ("wanted", "node_id", "matches"),
    [
        (None, "anything", True),
        ("fetch", "fetch", True),
        ("fetch", "fetcher", False),
        ("enrich", "enrich[12]", True),
        ("enrich[1]", "enrich[1]", True),
        ("enrich[1]", "enrich[12]", False),
        ("enrich", "enrichment[1]", False),
    ],
)
def test_log_node_filter(wanted: str | None, node_id: str, matches: bool) -> None:
    assert node_matches(wanted, node_id) is matches


def test_webhook_secrets_and_url_credentials_are_redacted() -> None:
    spec = flows.nightly.spec
    body = redacted_spec(spec)
    assert body["notify"][0]["secret"] == "<redacted>"
    assert body["notify"][0]["url"] == "https://hooks.example.com/conveyor"
    assert "s3cr3t" not in str(body) and "pw@" not in str(body) and "token=abc" not in str(body)
    (info,) = notify_of(spec)
    assert (info.url, info.signed) == ("https://hooks.example.com/conveyor", True)
    # The spec object itself is untouched (it is what the orchestrator runs).
    assert spec.notify[0].secret == "s3cr3t"
