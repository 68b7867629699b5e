"""The HTTP API over a real nats-server, orchestrator and worker, through real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import zoneinfo
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.models import LogLine
from events.testing import eventually
from orchestrator.http import ApiServer, create_app
from orchestrator.runtime.queries import Queries
from orchestrator.runtime.registry import Registry
from tests.api import flows
from tests.api.support import ApiEnv, SseReader, serving

STATIC = Path(__file__).resolve().parents[2] / "orchestrator" / "http" / "static"


async def _requested(env: ApiEnv) -> list[str]:
    """Run ids of every run.requested event durably in the event stream."""
    bus = env.harness.client.bus
    topology = bus.topology
    subject = f"{topology.namespace}.evt.*.run.requested.*"
    messages = await bus.read_stream(topology.events_stream, subject)
    return [m.subject.rsplit(".", 1)[1] for m in messages]


# ---- schema and static -------------------------------------------------------------------------


async def test_openapi_documents_every_route(api: ApiEnv) -> None:
    schema = (await api.anon.get("/openapi.json")).json()
    routes = {(method, path) for path, ops in schema["paths"].items() for method in ops}
    assert routes == {
        ("get", "/api/flow"),
        ("get", "/api/workflows"),
        ("get", "/api/workflows/{name}"),
        ("post", "/api/workflows/{name}/runs"),
        ("get", "/api/runs"),
        ("get", "/api/stats/runs"),
        ("get", "/api/runs/{run_id}"),
        ("get", "/api/runs/{run_id}/nodes/{key}"),
        ("get", "/api/runs/{run_id}/nodes/{node_id}/children"),
        ("post", "/api/runs/{run_id}/cancel"),
        ("post", "/api/runs/{run_id}/retry"),
        ("get", "/api/runs/{run_id}/logs"),
        ("get", "/api/runs/{run_id}/logs/stream"),
        ("get", "/api/events"),
        ("get", "/api/runs/{run_id}/events"),
        ("get", "/api/runs/{run_id}/timeline"),
        ("get", "/api/runs/{run_id}/values/{which}"),
        ("get", "/api/queues"),
        ("get", "/api/workers"),
    }
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert op.get("security") == [{"HTTPBearer": []}], (method, path)
            ok = op["responses"].get("200") or op["responses"].get("202")
            assert ok and ok["content"], f"{method} {path} documents no success body"
            assert "401" in op["responses"], (method, path)
    streams = [p for p in ("/api/events", "/api/runs/{run_id}/logs/stream")]
    for path in streams:
        assert "text/event-stream" in schema["paths"][path]["get"]["responses"]["200"]["content"]


async def test_dashboard_is_served_with_no_external_resources(api: ApiEnv) -> None:
    page = await api.anon.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert '<script type="module" src="/static/js/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            text = path.read_text()
            rel = path.relative_to(STATIC).as_posix()
            served = await api.anon.get(f"/static/{rel}")
            assert served.status_code == 200, rel
            # The only URL allowed is the SVG namespace (an identifier, never fetched).
            remote = text.replace("http://www.w3.org/2000/svg", "")
            assert "http://" not in remote and "https://" not in remote, rel
            assert "//cdn" not in remote, rel


# ---- workflows ---------------------------------------------------------------------------------


async def test_workflows_list_and_detail_with_dag(api: ApiEnv) -> None:
    listed = (await api.http.get("/api/workflows")).json()
    by_name = {w["name"]: w for w in listed}
    assert set(by_name) == {"report", "broken", "slow", "picky", "nightly"}
    assert by_name["report"]["latest_version"] == 1
    assert by_name["report"]["nodes"] == 5
    assert by_name["report"]["runs"] == {} and by_name["report"]["last_run"] is None

    detail = (await api.http.get("/api/workflows/report")).json()
    assert detail["version"] == detail["latest_version"] == 1
    assert detail["versions"] == [1]
    assert detail["input_schema"]["properties"]["rows"]["default"] == 5
    assert detail["description"].startswith("Fetch rows")
    depth = {n["id"]: n["depth"] for n in detail["dag"]["nodes"]}
    assert depth == {"fetch": 0, "enrich": 1, "audit": 1, "summarise": 2, "publish": 3}
    assert detail["dag"]["depth"] == 4
    edges = {(e["source"], e["target"]) for e in detail["dag"]["edges"]}
    assert edges == {
        ("fetch", "enrich"),
        ("fetch", "audit"),
        ("enrich", "summarise"),
        ("audit", "summarise"),
        ("summarise", "publish"),
    }
    enrich = next(n for n in detail["dag"]["nodes"] if n["id"] == "enrich")
    assert enrich["mapped"] is True and enrich["map_param"] == "x"


async def test_schedules_triggers_and_webhooks_without_secrets(api: ApiEnv) -> None:
    now = time.time()
    summary = {w["name"]: w for w in (await api.http.get("/api/workflows")).json()}["nightly"]
    assert (summary["schedules"], summary["triggers"], summary["paused"]) == (1, 1, False)
    assert summary["next_run_at"] > now

    response = await api.http.get("/api/workflows/nightly")
    for secret in ("s3cr3t", "ops:pw", "token=abc"):
        assert secret not in response.text
    detail = response.json()
    (schedule,) = detail["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == ("0 3 * * *", "Europe/Paris")
    assert schedule["input"] == {"rows": 2} and schedule["catchup"] == "latest"
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    instants = [dt.datetime.fromtimestamp(t, paris) for t in schedule["next_at"]]
    assert len(instants) == 3 and instants == sorted(instants)
    assert all((i.hour, i.minute) == (3, 0) for i in instants)
    assert schedule["next_at"][0] == summary["next_run_at"]
    assert detail["triggers"] == [{"exact": {"type": "com.example.data.arrived"}}]
    assert detail["notify"] == [
        {
            "url": "https://hooks.example.com/conveyor",
            "on": ["succeeded", "failed", "cancelled"],
            "signed": True,
        }
    ]
    assert detail["spec"]["notify"][0]["secret"] == "<redacted>"
    kinds = {n["id"]: (n["kind"], n["label"]) for n in detail["dag"]["nodes"]}
    assert kinds == {"sleep": ("sleep", "sleep 30s"), "fetch": ("task", "fetch")}

    await Registry(api.harness.client.bus).set_paused("nightly", True)
    assert (await api.http.get("/api/workflows/nightly")).json()["paused"] is True
    listed = {w["name"]: w for w in (await api.http.get("/api/workflows")).json()}
    assert listed["nightly"]["paused"] is True


async def test_workflow_versions(api: ApiEnv) -> None:
    changed = flows.broken.spec.model_copy(update={"description": "second version"})
    await Registry(api.harness.client.bus).register(changed)
    latest = (await api.http.get("/api/workflows/broken")).json()
    assert latest["version"] == 2 and latest["versions"] == [1, 2]
    assert latest["description"] == "second version"
    first = (await api.http.get("/api/workflows/broken", params={"version": 1})).json()
    assert first["version"] == 1 and first["latest_version"] == 2
    assert first["description"].startswith("Fails at once")
    missing = await api.http.get("/api/workflows/broken", params={"version": 9})
    assert missing.status_code == 404 and "version 9" in missing.json()["detail"]
    unknown = await api.http.get("/api/workflows/nope")
    assert unknown.status_code == 404
    assert "unknown workflow 'nope'" in unknown.json()["detail"]


# ---- trigger -----------------------------------------------------------------------------------


async def test_trigger_is_accepted_once_durable_and_the_run_completes(api: ApiEnv) -> None:
    response = await api.http.post("/api/workflows/report/runs", json={"input": {"rows": 4}})
    assert response.status_code == 202
    body = response.json()
    run_id = body["run_id"]
    assert body["action"] == "trigger"
    assert response.headers["location"] == body["url"] == f"/api/runs/{run_id}"
    # 202 came after the JetStream ack: the request is in the stream already.
    assert run_id in await _requested(api)

    run = await api.wait(run_id)
    assert run["status"] == "succeeded", run
    assert run["output"] == "ops: 18"
    assert run["input"] == {"rows": 4, "factor": 3, "channel": "ops"}  # defaults applied
    assert list(run["nodes"]) == ["fetch", "enrich", "audit", "summarise", "publish"]
    fetch = run["nodes"]["fetch"]
    assert fetch["input"] == {"rows": 4} and fetch["output"] == [0, 1, 2, 3]
    (attempt,) = fetch["attempt_history"]
    assert attempt["status"] == "succeeded" and attempt["worker"]
    assert attempt["dispatched_at"] <= attempt["started_at"] <= attempt["finished_at"]
    enrich = run["nodes"]["enrich"]
    assert enrich["children"] == {"total": 4, "succeeded": 4}
    assert enrich["output"] == [0, 3, 6, 9]
    assert run["finished_at"] >= run["created_at"]

    without_io = (await api.http.get(f"/api/runs/{run_id}", params={"io": "false"})).json()
    assert without_io["input"] is None and without_io["nodes"]["fetch"]["output"] is None
    assert without_io["nodes"]["fetch"]["status"] == "succeeded"


async def test_trigger_with_an_empty_body_uses_the_defaults(api: ApiEnv) -> None:
    response = await api.http.post("/api/workflows/report/runs")
    assert response.status_code == 202, response.text
    run = await api.wait(response.json()["run_id"])
    assert run["output"] == "ops: 30"  # rows=5, factor=3: 3 * (0+1+2+3+4)


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/workflows/nope/runs", {}, 404, "unknown workflow 'nope'"),
        ("/api/workflows/report/runs", {"version": 7}, 404, "version 7"),
        ("/api/workflows/report/runs", {"input": {"rows": "many"}}, 422, "input.rows"),
        ("/api/workflows/report/runs", {"run_id": "has space"}, 400, "run_id"),
        ("/api/workflows/report/runs", {"input": [1, 2]}, 422, "body.input"),
        ("/api/workflows/report/runs", {"inputs": {}}, 422, "inputs"),
        ("/api/workflows/bad.name/runs", {}, 422, "name"),
    ],
)
async def test_bad_triggers_are_refused_and_publish_nothing(
    api: ApiEnv, path: str, body: dict[str, Any], status: int, says: str
) -> None:
    response = await api.http.post(path, json=body)
    assert response.status_code == status, response.text
    problem = response.json()
    assert says in problem["detail"] + " ".join(problem["problems"]), problem
    assert await _requested(api) == []
    assert (await api.http.get("/api/runs")).json()["runs"] == []


async def test_invalid_json_body_is_a_422(api: ApiEnv) -> None:
    response = await api.http.post(
        "/api/workflows/report/runs",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "json" in response.json()["detail"].lower()
    assert await _requested(api) == []


async def test_same_idempotency_key_gives_the_same_run(api: ApiEnv) -> None:
    first = await api.trigger("report", {"rows": 2}, idempotency_key="order-17")
    second = await api.trigger("report", {"rows": 2}, idempotency_key="order-17")
    assert first == second
    await api.wait(first)
    runs = (await api.http.get("/api/runs")).json()["runs"]
    assert [r["run_id"] for r in runs] == [first]
    assert runs[0]["idempotency_key"] == "order-17"


# ---- runs list ---------------------------------------------------------------------------------


async def test_runs_list_filters_pagination_and_counts(api: ApiEnv) -> None:
    ok = [await api.trigger("report", {"rows": n}) for n in range(1, 6)]
    bad = await api.trigger("broken")
    for run_id in [*ok, bad]:
        await api.wait(run_id)

    everything = (await api.http.get("/api/runs", params={"limit": 500})).json()
    assert everything["next_cursor"] is None
    listed = everything["runs"]
    assert {r["run_id"] for r in listed} == {*ok, bad}
    keys = [(r["created_at"], r["run_id"]) for r in listed]
    assert keys == sorted(keys, reverse=True), "newest first, ties broken by run id"

    # Keyset pages of 2 walk the same list, without gaps or repeats.
    paged: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.http.get("/api/runs", params=params)).json()
        assert len(page["runs"]) <= 2
        paged += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == [r["run_id"] for r in listed]

    failed = (await api.http.get("/api/runs", params={"status": "failed"})).json()["runs"]
    assert [r["run_id"] for r in failed] == [bad]
    assert failed[0]["error"]["type"] == "NonRetryableError"
    both = await api.http.get("/api/runs", params=[("status", "failed"), ("status", "succeeded")])
    assert len(both.json()["runs"]) == 6
    only_report = (await api.http.get("/api/runs", params={"workflow": "report"})).json()["runs"]
    assert {r["run_id"] for r in only_report} == set(ok)
    assert (await api.http.get("/api/runs", params={"workflow": "slow"})).json()["runs"] == []

    newest = listed[0]["created_at"]
    after = (await api.http.get("/api/runs", params={"created_after": newest})).json()["runs"]
    assert after and all(r["created_at"] >= newest for r in after)
    before = (await api.http.get("/api/runs", params={"created_before": newest})).json()["runs"]
    assert {r["run_id"] for r in before} | {r["run_id"] for r in after} == {*ok, bad}
    assert not {r["run_id"] for r in before} & {r["run_id"] for r in after}

    counts = (await api.http.get("/api/stats/runs")).json()
    assert counts == {"total": 6, "by_status": {"failed": 1, "succeeded": 5}}
    report_counts = (await api.http.get("/api/stats/runs", params={"workflow": "report"})).json()
    assert report_counts == {"total": 5, "by_status": {"succeeded": 5}}

    summary = {w["name"]: w for w in (await api.http.get("/api/workflows")).json()}
    assert summary["report"]["runs"] == {"succeeded": 5}
    assert summary["report"]["last_run"]["run_id"] in ok
    assert summary["broken"]["runs"] == {"failed": 1}


@pytest.mark.parametrize("cursor", ["garbage", "e30", "WzEsMl0"])
async def test_a_bad_cursor_is_a_400(api: ApiEnv, cursor: str) -> None:
    response = await api.http.get("/api/runs", params={"cursor": cursor})
    assert response.status_code == 400
    assert "invalid cursor" in response.json()["detail"]


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 501}, {"created_after": "yesterday"}, {"workflow": "x" * 65}]
)
async def test_bad_list_parameters_are_a_422(api: ApiEnv, params: dict[str, Any]) -> None:
    response = await api.http.get("/api/runs", params=params)
    assert response.status_code == 422
    assert response.json()["problems"]


# ---- run detail, nodes, children ---------------------------------------------------------------


async def test_detail_of_a_mapped_run_matches_the_cli_status(api: ApiEnv) -> None:
    """The fast detail (children counted in SQL) is exactly run_status over every row."""
    run_id = await api.trigger("picky", {"rows": 40})
    run = await api.wait(run_id)
    assert run["status"] == "failed"
    check = run["nodes"]["check"]
    # The first failing child fails the run (its siblings are cancelled or already done).
    children = check["children"]
    assert children["total"] == 40 and children["failed"] == 1
    assert sum(v for k, v in children.items() if k != "total") == 40
    (failure,) = check["failed_children"]
    assert int(failure["key"].removeprefix("check[").rstrip("]")) % 3 == 0
    assert failure["error"]["type"] == "NonRetryableError"
    assert "multiple of three" in failure["error"]["message"]
    assert failure["error"]["traceback"].startswith("Traceback")

    assert api.harness.engine is not None
    queries = Queries(api.harness.engine.store)
    fast = await queries.run_detail(run_id)
    full = await queries.run_detail_full(run_id)
    assert fast == full
    assert await queries.run_detail(run_id, include_io=False) is not None


async def test_node_and_children_pages(api: ApiEnv) -> None:
    run_id = await api.trigger("report", {"rows": 25, "factor": 2})
    await api.wait(run_id)
    child = (await api.http.get(f"/api/runs/{run_id}/nodes/enrich[7]")).json()
    assert child["key"] == "enrich[7]" and child["node_id"] == "enrich" and child["index"] == 7
    assert child["input"] == {"x": 7, "factor": 2} and child["output"] == 14
    assert child["attempt_history"][0]["status"] == "succeeded"
    parent = (await api.http.get(f"/api/runs/{run_id}/nodes/enrich")).json()
    assert parent["children"] == {"total": 25, "succeeded": 25}
    assert parent["output"] == [2 * i for i in range(25)]

    seen: list[int] = []
    after = -1
    pages = 0
    while after is not None:
        page = (
            await api.http.get(
                f"/api/runs/{run_id}/nodes/enrich/children", params={"after": after, "limit": 10}
            )
        ).json()
        seen += [c["index"] for c in page["children"]]
        assert all(c["status"] == "succeeded" for c in page["children"])
        after = page["next_after"]
        pages += 1
    assert seen == list(range(25)) and pages == 3

    failed = await api.http.get(
        f"/api/runs/{run_id}/nodes/enrich/children", params={"status": "failed"}
    )
    assert failed.json() == {"children": [], "next_after": None}
    plain = await api.http.get(f"/api/runs/{run_id}/nodes/fetch/children")
    assert plain.json()["children"] == []

    for path, status in [
        (f"/api/runs/{run_id}/nodes/enrich[99]", 404),
        (f"/api/runs/{run_id}/nodes/nope", 404),
        (f"/api/runs/{run_id}/nodes/nope/children", 404),
        ("/api/runs/no-such-run", 404),
        ("/api/runs/no-such-run/nodes/fetch", 404),
        (f"/api/runs/{run_id}/nodes/bad key", 422),
        ("/api/runs/bad.id", 422),
    ]:
        response = await api.http.get(path)
        assert response.status_code == status, (path, response.text)
        assert response.json()["detail"]


# ---- cancel and retry --------------------------------------------------------------------------


async def test_cancel_a_running_run_then_conflicts(api: ApiEnv) -> None:
    run_id = await api.trigger("slow", {"seconds": 120})
    await api.wait_node(run_id, "wait_for", "running")
    response = await api.http.post(f"/api/runs/{run_id}/cancel", json={"reason": "test"})
    assert response.status_code == 202
    assert response.json() == {"run_id": run_id, "action": "cancel", "url": f"/api/runs/{run_id}"}
    run = await api.wait(run_id)
    assert run["status"] == "cancelled"
    assert (run["error"]["type"], run["error"]["message"]) == ("Cancelled", "test")

    again = await api.http.post(f"/api/runs/{run_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]

    # A cancelled run can be retried: it resumes (and is cancelled again to clean up).
    retried = await api.http.post(f"/api/runs/{run_id}/retry")
    assert retried.status_code == 202 and retried.json()["action"] == "retry"
    await api.wait(run_id, {"running"})
    assert (await api.http.post(f"/api/runs/{run_id}/cancel")).status_code == 202
    await api.wait(run_id)


async def test_retry_a_failed_run_and_conflicts(api: ApiEnv) -> None:
    failed = await api.trigger("broken", {"reason": "first"})
    run = await api.wait(failed)
    assert run["status"] == "failed" and len(run["nodes"]["explode"]["attempt_history"]) == 1
    response = await api.http.post(f"/api/runs/{failed}/retry", json={"reason": "once more"})
    assert response.status_code == 202

    async def retried() -> dict[str, Any] | None:
        current = await api.run(failed)
        attempts = current["nodes"]["explode"]["attempt_history"] if current else []
        done = current is not None and current["status"] == "failed" and len(attempts) == 2
        return current if done else None

    run = await eventually(retried, message="the retried run to fail again on attempt 2")
    assert run["nodes"]["explode"]["attempt_history"][1]["attempt"] == 2
    # What the retry budget counts, as `conveyor status` says it: one attempt since the retry.
    assert (
        run["nodes"]["explode"]["attempts"],
        run["nodes"]["explode"]["attempts_since_retry"],
    ) == (
        2,
        1,
    )
    node = (await api.http.get(f"/api/runs/{failed}/nodes/explode")).json()
    assert (node["attempt"], node["attempts_since_retry"]) == (2, 1)
    # Active time: the wait before the retry is not counted.
    assert run["resumed_at"] is not None and run["created_at"] < run["resumed_at"]
    assert 0 < run["duration_s"] < run["finished_at"] - run["created_at"]

    ok = await api.trigger("report", {"rows": 1})
    await api.wait(ok)
    conflict = await api.http.post(f"/api/runs/{ok}/retry")
    assert conflict.status_code == 409
    assert "only a failed or cancelled run" in conflict.json()["detail"]
    assert (await api.http.post(f"/api/runs/{ok}/cancel")).status_code == 409
    for action in ("cancel", "retry"):
        missing = await api.http.post(f"/api/runs/unknown-run/{action}")
        assert missing.status_code == 404 and "no run 'unknown-run'" in missing.json()["detail"]


# ---- live events -------------------------------------------------------------------------------


async def test_sse_delivers_a_runs_events_live(api: ApiEnv) -> None:
    run_id = "sse-run-1"
    async with api.http.stream("GET", "/api/events", params={"run_id": run_id}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = SseReader(response)
        ready, _ = await events.until("ready")
        assert ready == {"run_id": run_id, "scope": "all"}
        # Subscribed: trigger now, and every event of the run must come through.
        await api.trigger("report", {"rows": 3}, run_id=run_id)
        seen: list[dict[str, Any]] = []
        while not any(e["type"] == "run.succeeded" for e in seen):
            batch, _ = await events.until("events")
            assert all(e["run_id"] == run_id for e in batch)
            seen += batch
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "run.requested" and kinds[-1] == "run.succeeded"
    started = {e["node_id"] for e in seen if e["type"] == "task.started"}
    completed = {e["node_id"] for e in seen if e["type"] == "task.completed"}
    expected = {"fetch", "audit", "summarise", "publish", "enrich[0]", "enrich[1]", "enrich[2]"}
    assert completed == expected
    assert started <= expected  # a short task folds its start into its result (ran_s)
    done = next(e for e in seen if e["type"] == "task.completed")
    assert done["attempt"] == 1 and done["worker"] and done["time"]
    assert "output" not in done and "input" not in done


async def test_sse_runs_scope_carries_only_run_level_events(api: ApiEnv) -> None:
    async with api.http.stream("GET", "/api/events", params={"scope": "runs"}) as response:
        events = SseReader(response)
        await events.until("ready")
        run_id = await api.trigger("broken")
        seen: list[dict[str, Any]] = []
        while not any(e["type"] == "run.failed" for e in seen):
            batch, _ = await events.until("events")
            seen += batch
    assert {e["type"] for e in seen} == {"run.requested", "run.failed"}
    failed = next(e for e in seen if e["type"] == "run.failed")
    assert failed["run_id"] == run_id and failed["error"]["type"] == "NonRetryableError"
    requested = next(e for e in seen if e["type"] == "run.requested")
    assert requested["workflow"] == "broken"


async def test_a_client_going_away_releases_its_stream(api: ApiEnv) -> None:
    live = api.server.app.state.ctx.live
    assert live.active == 0
    async with api.http.stream("GET", "/api/events") as events:
        # Readers are kept: a dropped one closes its connection when collected.
        event_reader = SseReader(events)
        await event_reader.until("ready")
        async with api.http.stream("GET", "/api/runs/some-run/logs/stream") as logs:
            log_reader = SseReader(logs)
            await log_reader.until("ready")
            assert live.active == 2
    # Both clients hung up: their generators end and unsubscribe.
    await eventually(lambda: _zero(live.active), message="the streams to be released")


async def _zero(value: int) -> bool:
    return value == 0


async def test_stopping_the_server_ends_open_streams(api: ApiEnv) -> None:
    app = create_app(store=api.harness.engine.store, client=api.harness.client, dev=True)  # type: ignore[union-attr]
    server = await ApiServer(app, port=0).start()
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
        http.stream("GET", "/api/events") as response,
    ):
        events = SseReader(response)
        await events.until("ready")
        async with asyncio.timeout(10):
            await server.stop()
        with pytest.raises((AssertionError, httpx.HTTPError)):
            await events.next()  # the stream ended with the server


# ---- logs --------------------------------------------------------------------------------------


async def _log(env: ApiEnv, run_id: str, node_id: str, message: str, attempt: int = 1) -> None:
    line = LogLine(
        run_id=run_id,
        node_id=node_id,
        attempt=attempt,
        time="2026-01-01T00:00:00.000000Z",
        level="info",
        message=message,
        logger="tests",
    )
    bus = env.harness.client.bus
    await bus.publish_raw(
        bus.topology.log_subject(run_id, node_id),
        {"content-type": "application/json"},
        line.model_dump_json().encode(),
    )


async def test_logs_of_a_run_whose_task_logged(api: ApiEnv) -> None:
    run_id = await api.trigger("report", {"rows": 3})
    await api.wait(run_id)

    async def fetch_lines() -> list[dict[str, Any]]:
        page = await api.http.get(f"/api/runs/{run_id}/logs", params={"node": "fetch"})
        return page.json()["lines"]  # type: ignore[no-any-return]

    # The worker publishes captured lines asynchronously: they may trail the run's end.
    (line,) = await eventually(fetch_lines, message="the line fetch logged")
    assert (line["message"], line["level"], line["attempt"]) == ("fetched 3 rows", "warning", 1)
    assert line["run_id"] == run_id and line["node_id"] == "fetch" and line["seq"] > 0


async def test_logs_page_filters_and_pagination(api: ApiEnv) -> None:
    run_id = "logs-run"  # the log stream needs no run: lines are written here directly
    await _log(api, run_id, "fetch", "fetching")
    for i in range(3):
        await _log(api, run_id, f"enrich[{i}]", f"enrich {i}")
    await _log(api, run_id, "fetch", "second attempt", attempt=2)
    await _log(api, "another-run", "fetch", "not this run")

    everything = (await api.http.get(f"/api/runs/{run_id}/logs")).json()
    assert [line["message"] for line in everything["lines"]] == [
        "fetching",
        "enrich 0",
        "enrich 1",
        "enrich 2",
        "second attempt",
    ]
    seqs = [line["seq"] for line in everything["lines"]]
    assert seqs == sorted(seqs) and everything["next_after"] == seqs[-1]
    assert everything["more"] is False

    async def messages(**params: Any) -> list[str]:
        page = (await api.http.get(f"/api/runs/{run_id}/logs", params=params)).json()
        return [line["message"] for line in page["lines"]]

    assert await messages(node="fetch") == ["fetching", "second attempt"]
    assert await messages(node="fetch", attempt=2) == ["second attempt"]
    assert await messages(node="enrich") == ["enrich 0", "enrich 1", "enrich 2"]
    assert await messages(node="enrich[1]") == ["enrich 1"]
    assert await messages(after=seqs[2]) == ["enrich 2", "second attempt"]
    first = (await api.http.get(f"/api/runs/{run_id}/logs", params={"limit": 2})).json()
    assert [line["message"] for line in first["lines"]] == ["fetching", "enrich 0"]
    assert first["more"] is True and first["next_after"] == seqs[1]
    assert (await api.http.get("/api/runs/quiet-run/logs")).json() == {
        "lines": [],
        "next_after": 0,
        "more": False,
    }


async def test_log_tail_streams_new_lines_and_resumes(api: ApiEnv) -> None:
    run_id = "tail-run"
    await _log(api, run_id, "fetch", "before")
    page = (await api.http.get(f"/api/runs/{run_id}/logs")).json()
    after = page["next_after"]
    url = f"/api/runs/{run_id}/logs/stream"
    async with api.http.stream("GET", url, params={"node": "fetch", "after": after}) as response:
        tail = SseReader(response)
        await tail.until("ready")
        await _log(api, run_id, "audit", "other node")
        await _log(api, run_id, "fetch", "live line")
        lines, last_id = await tail.until("logs")
    assert [line["message"] for line in lines] == ["live line"]
    assert last_id == str(lines[-1]["seq"])

    # Reconnecting with Last-Event-ID continues after what was delivered.
    await _log(api, run_id, "fetch", "while away")
    headers = {"Last-Event-ID": last_id}
    async with api.http.stream("GET", url, params={"node": "fetch"}, headers=headers) as response:
        tail = SseReader(response)
        lines, _ = await tail.until("logs")
    assert [line["message"] for line in lines] == ["while away"]


# ---- construction ------------------------------------------------------------------------------


async def test_an_app_needs_a_token_unless_in_dev_mode(api: ApiEnv) -> None:
    engine = api.harness.engine
    assert engine is not None
    with pytest.raises(ValueError, match="token is required"):
        create_app(store=engine.store, client=api.harness.client)
    async with serving(api.harness, token=None) as dev:
        listed = await dev.anon.get("/api/workflows")
        assert listed.status_code == 200 and len(listed.json()) == len(flows.WORKFLOWS)
        run_id = await dev.trigger("report", {"rows": 1})  # no token needed to act either
        assert (await dev.wait(run_id))["status"] == "succeeded"
