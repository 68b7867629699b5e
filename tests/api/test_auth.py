"""Bearer-token auth: every /api route refuses a missing or bad token, and a refused request
changes nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestrator.http import create_app
from tests.api.support import TOKEN, ApiEnv

SAMPLE_PARAMS = {
    "name": "report",
    "run_id": "some-run",
    "key": "fetch",
    "node_id": "enrich",
    "which": "input",
}
BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer"},
]


async def _routes(env: ApiEnv) -> list[tuple[str, str]]:
    schema = (await env.anon.get("/openapi.json")).json()
    routes = []
    for path, ops in schema["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS[m.group(1)], path)
        routes += [(method.upper(), concrete) for method in ops]
    return routes


async def test_every_api_route_refuses_missing_or_bad_tokens(api: ApiEnv) -> None:
    routes = await _routes(api)
    assert len(routes) == 19  # the schema lists every route (pinned in test_api)
    for method, path in routes:
        for headers in BAD_CREDENTIALS:
            body: dict[str, Any] | None = {} if method == "POST" else None
            response = await api.anon.request(method, path, headers=headers, json=body)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "token" in response.json()["detail"]


async def test_the_right_token_is_accepted(api: ApiEnv) -> None:
    response = await api.anon.get("/api/workflows", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    # The scheme is case-insensitive (RFC 7235).
    response = await api.anon.get("/api/runs", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


async def test_public_resources_need_no_token(api: ApiEnv) -> None:
    for path in ("/", "/openapi.json", "/static/js/app.js", "/healthz"):
        response = await api.anon.get(path)
        assert response.status_code == 200, path


async def _events(env: ApiEnv, verb: str) -> list[str]:
    """Run ids of the `run.<verb>` events in the event stream."""
    bus = env.harness.client.bus
    topology = bus.topology
    subject = f"{topology.namespace}.evt.*.run.{verb}.*"
    return [
        m.subject.rsplit(".", 1)[1] for m in await bus.read_stream(topology.events_stream, subject)
    ]


async def test_refused_posts_change_nothing(api: ApiEnv) -> None:
    bad = {"Authorization": "Bearer wrong-token"}
    refused = await api.anon.post(
        "/api/workflows/report/runs", json={"input": {"rows": 1}, "run_id": "sneaky"}, headers=bad
    )
    assert refused.status_code == 401
    assert await _events(api, "requested") == []
    assert (await api.http.get("/api/runs")).json()["runs"] == []
    assert await api.run("sneaky") is None

    running = await api.trigger("slow", {"seconds": 120})
    await api.wait_node(running, "wait_for", "running")
    failed = await api.trigger("broken")
    await api.wait(failed)
    for path in (f"/api/runs/{running}/cancel", f"/api/runs/{failed}/retry"):
        for headers in BAD_CREDENTIALS:
            response = await api.anon.post(path, json={"reason": "x"}, headers=headers)
            assert response.status_code == 401, (path, headers)
    assert await _events(api, "cancel-requested") == []
    assert await _events(api, "retry-requested") == []
    assert (await api.run(running) or {}).get("status") == "running"
    assert (await api.run(failed) or {}).get("status") == "failed"

    # The same requests with the token do act (so the checks above could have failed).
    assert (await api.http.post(f"/api/runs/{running}/cancel")).status_code == 202
    assert await _events(api, "cancel-requested") == [running]
    assert (await api.wait(running))["status"] == "cancelled"


@pytest.mark.parametrize("token", [None, "", "   "])
async def test_an_app_without_a_real_token_is_refused(api: ApiEnv, token: str | None) -> None:
    engine = api.harness.engine
    assert engine is not None
    with pytest.raises(ValueError, match="token is required"):
        create_app(store=engine.store, client=api.harness.client, token=token)


async def test_a_refused_token_is_not_echoed(api: ApiEnv) -> None:
    response = await api.anon.get("/api/runs", headers={"Authorization": "Bearer guess-123"})
    assert response.status_code == 401
    assert "guess-123" not in response.text
