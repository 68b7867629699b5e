"""The operator views of the HTTP API: a run's trigger, event history, timeline and full values,
mapped children with their item, logs of several nodes, and the task queues — over a real
nats-server, orchestrator and worker, through real HTTP."""

from __future__ import annotations

import json
from typing import Any

from events.models import LogLine
from events.testing import eventually
from tests.api import flows
from tests.api.support import ApiEnv


async def test_a_run_triggered_through_the_api_says_so(api: ApiEnv) -> None:
    run_id = await api.trigger("report", {"rows": 2})
    run = await api.wait(run_id)
    trigger = run["trigger"]
    assert trigger["kind"] == "api" and trigger["source"] == "conveyor/api"
    assert trigger["by"] == "HTTP API, from 127.0.0.1"
    listed = (await api.http.get("/api/runs", params={"workflow": "report"})).json()
    assert listed["runs"][0]["trigger"]["kind"] == "api"


async def test_the_event_history_of_a_run(api: ApiEnv) -> None:
    run_id = await api.trigger("report", {"rows": 3})
    await api.wait(run_id)
    page = (await api.http.get(f"/api/runs/{run_id}/events")).json()
    events = page["events"]
    types = [e["type"].removeprefix("io.conveyor.") for e in events]
    assert types[0] == "run.requested" and types[-1] == "run.succeeded"
    # Every task completed once: fetch, 3 children of enrich, audit, summarise, publish (a short
    # task folds its start into its result: task.started only for those still running at 0.1 s).
    assert types.count("task.completed") == 7
    assert types.count("task.started") <= 7
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and page["next_after"] == seqs[-1] and page["more"] is False
    requested = events[0]
    assert requested["source"] == "conveyor/api"
    assert requested["data"]["input"] == {"rows": 3}
    assert requested["headers"]["ce-type"] == "io.conveyor.run.requested"
    assert requested["extensions"]["runid"] == run_id
    assert requested["size"] == len(json.dumps(requested["data"], separators=(",", ":")))
    completed = next(e for e in events if e["node_id"] == "enrich[1]" and "completed" in e["type"])
    assert completed["attempt"] == 1 and completed["data"]["output"] == 3

    # Paged by sequence: two at a time, the same events in the same order.
    paged: list[int] = []
    after = 0
    while True:
        chunk = (
            await api.http.get(f"/api/runs/{run_id}/events", params={"after": after, "limit": 2})
        ).json()
        paged += [e["seq"] for e in chunk["events"]]
        after = chunk["next_after"]
        if not chunk["more"]:
            break
    assert paged == seqs
    empty = (await api.http.get("/api/runs/never-was/events")).json()
    assert empty == {"events": [], "next_after": 0, "more": False}


async def test_the_timeline_of_a_run(api: ApiEnv) -> None:
    run_id = await api.trigger("report", {"rows": 6})
    run = await api.wait(run_id)
    timeline = (await api.http.get(f"/api/runs/{run_id}/timeline")).json()
    lanes = {lane["node_id"]: lane for lane in timeline["lanes"]}
    assert list(lanes) == ["fetch", "enrich", "audit", "summarise", "publish"]
    (fetch,) = lanes["fetch"]["attempts"]
    assert fetch["status"] == "succeeded" and fetch["worker"]
    assert run["created_at"] <= fetch["dispatched_at"] <= fetch["started_at"]
    assert fetch["started_at"] <= fetch["finished_at"] <= run["finished_at"]
    enrich = lanes["enrich"]
    assert enrich["mapped"] and enrich["attempts"] == []
    assert enrich["children"] == {"total": 6, "succeeded": 6}
    density = enrich["density"]
    assert len(density["bins"]) == 120 and 1 <= density["peak"] <= 6
    assert density["start"] >= fetch["finished_at"] - 0.001
    response = await api.http.get("/api/runs/no-such-run/timeline")
    assert response.status_code == 404


async def test_values_download_in_full(api: ApiEnv) -> None:
    run_id = await api.trigger("report", {"rows": 4, "factor": 5})
    await api.wait(run_id)
    output = await api.http.get(f"/api/runs/{run_id}/values/output")
    assert output.status_code == 200
    assert output.headers["content-disposition"] == f'attachment; filename="{run_id}-output.json"'
    assert output.json() == "ops: 30"
    run_input = await api.http.get(f"/api/runs/{run_id}/values/input")
    assert run_input.json() == {"rows": 4, "factor": 5, "channel": "ops"}  # defaults filled
    child = await api.http.get(f"/api/runs/{run_id}/values/input", params={"node": "enrich[2]"})
    assert child.json() == {"x": 2, "factor": 5}
    assert "enrich-2-input.json" in child.headers["content-disposition"]
    for path, params, status in [
        ("/api/runs/nope/values/input", {}, 404),
        (f"/api/runs/{run_id}/values/input", {"node": "nope"}, 404),
        (f"/api/runs/{run_id}/values/secrets", {}, 422),
        (f"/api/runs/{run_id}/values/input", {"node": "bad key"}, 422),
    ]:
        response = await api.http.get(path, params=params)
        assert response.status_code == status, (path, response.text)


async def test_children_name_the_item_they_were_mapped_over(api: ApiEnv) -> None:
    run_id = await api.trigger("report", {"rows": 5})
    await api.wait(run_id)
    page = (await api.http.get(f"/api/runs/{run_id}/nodes/enrich/children")).json()
    assert [(c["key"], c["item"]) for c in page["children"]] == [
        (f"enrich[{i}]", i) for i in range(5)
    ]


async def test_logs_of_several_nodes_at_once(api: ApiEnv) -> None:
    run_id = "several-nodes"
    bus = api.harness.client.bus
    for node, message in [("fetch", "a"), ("enrich[0]", "b"), ("audit", "c"), ("publish", "d")]:
        line = LogLine(
            run_id=run_id,
            node_id=node,
            attempt=1,
            time="2026-01-01T12:00:00Z",
            level="info",
            message=message,
        )
        await bus.publish_raw(
            bus.topology.log_subject(run_id, node), {}, line.model_dump_json().encode()
        )

    async def messages(nodes: list[str]) -> list[str]:
        page = await api.http.get(f"/api/runs/{run_id}/logs", params={"node": nodes})
        assert page.status_code == 200, page.text
        return [line["message"] for line in page.json()["lines"]]

    assert await messages(["fetch", "audit"]) == ["a", "c"]
    assert await messages(["enrich", "publish"]) == ["b", "d"]
    assert await messages([]) == ["a", "b", "c", "d"]
    bad = await api.http.get(f"/api/runs/{run_id}/logs", params={"node": ["fetch", "no good"]})
    assert bad.status_code == 422


async def test_queues_show_each_consumer_and_its_backlog(api: ApiEnv) -> None:
    run_id = await api.trigger("report", {"rows": 2})
    await api.wait(run_id)
    page = (await api.http.get("/api/queues")).json()
    assert page["dead_letters"] >= 0
    default = [q for q in page["queues"] if q["queue"] == "default"]
    assert default, page
    queue: dict[str, Any] = default[0]
    assert queue["pending"] == 0 and queue["ack_pending"] == 0
    assert queue["oldest_waiting_s"] is None
    assert queue["waiting_pulls"] >= 1  # the idle worker's parked pull
    assert queue["last_active"] is not None


async def test_workers_say_what_they_serve_and_what_nobody_serves(api: ApiEnv) -> None:
    page = (await api.http.get("/api/workers")).json()
    (worker,) = page["workers"]
    assert worker["live"] and worker["status"] == "alive" and worker["state"] == "running"
    assert worker["queues"] == ["default"]
    assert set(worker["tasks"]) == {t.name for t in flows.TASKS}
    assert worker["in_flight"] == 0 and worker["concurrency"] == 16
    assert worker["last_heartbeat"] >= worker["started_at"] - 1
    assert page["unserved"] == []

    await api.harness.register(flows.long_chain)
    await api.harness.stop_worker(api.harness.workers[0])

    async def gone() -> dict[str, Any] | None:
        got = (await api.http.get("/api/workers")).json()
        return got if got["workers"] and got["workers"][0]["status"] == "gone" else None

    page = await eventually(gone, message="the stopped worker to be gone")
    assert page["workers"][0]["state"] == "stopped"
    unserved = {u["workflow"]: u["tasks"] for u in page["unserved"]}
    assert unserved["long_chain"] == [{"queue": "default", "task": "step"}]
    assert {"report", "broken", "slow", "picky", "nightly"} <= set(unserved)
