"""Flow control through the API (docs/flow-control.md): a run queued behind a limit says why it
waits and where it stands; /api/flow lists the limit at work; a trigger carries a priority."""

from __future__ import annotations

from tests.api import flows
from tests.api.support import ApiEnv


async def test_a_queued_run_says_why_it_waits_and_the_flow_api_lists_the_limit(
    api: ApiEnv,
) -> None:
    await api.harness.register(flows.one_at_a_time)
    ahead = await api.trigger("one_at_a_time", {"seconds": 120})
    await api.wait_node(ahead, "wait_for", "running")
    behind = await api.trigger("one_at_a_time", {"seconds": 0.01}, priority=9)
    run = await api.wait(behind, {"queued"})
    assert run["priority"] == 9
    waiting = run["waiting"]
    assert (waiting["reason"], waiting["scope"], waiting["limit"], waiting["key"]) == (
        "concurrency",
        "run",
        1,
        "",
    )
    assert (waiting["position"], waiting["holding"], waiting["queued"]) == (1, 1, 1)

    [limiter] = (await api.http.get("/api/flow")).json()
    assert (limiter["kind"], limiter["scope"], limiter["name"]) == (
        "limiter",
        "run",
        "one_at_a_time",
    )
    assert (limiter["holding"], limiter["waiting"], limiter["limit"]) == (1, 1, 1)

    # The run ahead is cancelled: its slot goes to the one behind, which runs to its end.
    assert (await api.http.post(f"/api/runs/{ahead}/cancel")).status_code == 202
    final = await api.wait(behind)
    assert final["status"] == "succeeded" and final["waiting"] is None
    assert (await api.http.get("/api/flow")).json() == []  # nothing held, nothing queued


async def test_a_priority_out_of_range_is_refused_and_changes_nothing(api: ApiEnv) -> None:
    response = await api.http.post("/api/workflows/report/runs", json={"input": {}, "priority": 11})
    assert response.status_code == 422
    assert "priority" in response.text
    assert (await api.http.get("/api/runs")).json()["runs"] == []
