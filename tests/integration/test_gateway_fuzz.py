"""Fuzz the webhook gateway against its own OpenAPI schema (schemathesis), over real HTTP to a
gateway on a real nats-server: no request gets a 5xx, and every answer is one the schema
documents (status, content type, body).

Bodies of every media type the schema names (plain JSON, structured, batch) and the documented
headers (`ce-*`, the signature headers) are fuzzed on a hook without a signature (so they reach
the decoder; data that does not fit the schema too: negative mode), on a signed hook and on an
unknown one. Bounded: a fixed number of examples, derandomized (a failure reproduces).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import hypothesis
import pytest_asyncio
import schemathesis

# Loaded here, in the main thread at collection, not lazily by `openapi.from_dict` in the
# fuzzing thread: CPython 3.11.7 raised `SystemError: AST constructor recursion depth
# mismatch` while pytest rewrote it there after a caught RecursionError (deep JSON).
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orchestrator.http.server import ApiServer
from orchestrator.triggers.webhooks import HooksConfig, create_gateway
from tests.integration import trigger_flows as flows
from tests.integration.harness import Harness

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
HOOKS = HooksConfig.model_validate(
    {
        "hooks": {
            "open": {"type": "com.shop.order.created", "auth": {"kind": "none"}},
            "signed": {
                "type": "com.shop.order.created",
                "auth": {"kind": "standard", "secret": "whsec_c2VjcmV0"},
                "max_bytes": 4096,
            },
        }
    }
)
# (generation mode, hook, examples): bodies of every documented media type are drawn in each.
RUNS = [
    (GenerationMode.POSITIVE, "open", 150),
    (GenerationMode.NEGATIVE, "open", 100),
    (GenerationMode.POSITIVE, "signed", 25),
    (GenerationMode.POSITIVE, "nope", 10),
]


@pytest_asyncio.fixture
async def gateway_url(harness: Harness) -> AsyncIterator[str]:
    await harness.start_orchestrator()
    await harness.start_router()
    await harness.register(flows.on_order)
    app = create_gateway(harness.client.bus, HOOKS)
    async with ApiServer(app, port=0) as server:
        yield server.url


def _fuzz(raw_schema: dict[str, Any], base_url: str) -> tuple[list[str], list[str]]:
    schema = schemathesis.openapi.from_dict(copy.deepcopy(raw_schema))
    fuzzed: list[str] = []
    failures: list[str] = []
    operation = schema["/hooks/{name}"]["POST"]
    for mode, hook, examples in RUNS:
        label = f"{mode.value} POST /hooks/{hook}"
        strategy = operation.as_strategy(mode, path_parameters={"name": hook})

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples every run: a failure reproduces
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=strategy)
        def check(case: Any) -> None:
            case.call_and_validate(base_url=base_url, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every run's failure, then report them all
            failures.append(f"{label}: {exc}")
        fuzzed.append(label)
    return fuzzed, failures


async def test_fuzzed_deliveries_never_get_a_server_error_or_an_undocumented_answer(
    gateway_url: str,
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        raw = (await client.get("/openapi.json")).json()
    documented = set(raw["paths"]["/hooks/{name}"]["post"]["responses"])
    assert documented == {"202", "400", "401", "404", "413", "422", "503"}
    async with asyncio.timeout(240):
        fuzzed, failures = await asyncio.to_thread(_fuzz, raw, gateway_url)
    assert len(fuzzed) == len(RUNS)
    assert not failures, "\n\n".join(failures)
