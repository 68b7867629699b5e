"""Fuzz the API against its own OpenAPI schema (schemathesis): no request makes it fail with a
5xx, and every response matches what the schema documents (status code, content type, body).

Bounded: a few dozen examples per operation, no shrinking database, well under a minute. The
server runs on this test's event loop; schemathesis is synchronous (requests), so it runs in a
worker thread while the loop serves it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis
import schemathesis

# Loaded here, in the main thread at collection, not lazily by `openapi.from_dict` in the
# fuzzing thread: CPython 3.11.7 raised `SystemError: AST constructor recursion depth
# mismatch` while pytest rewrote it there after a caught RecursionError (deep JSON).
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.support import AUTH, ApiEnv

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _is_stream(operation: Any) -> bool:
    """SSE routes never end a response by design: fuzzing them would hang, not find bugs."""
    ok = operation.definition.raw.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


def _fuzz(raw_schema: dict[str, Any], base_url: str) -> tuple[list[str], list[str]]:
    schema = schemathesis.openapi.from_dict(raw_schema)
    fuzzed: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if _is_stream(operation):
            continue
        label = f"{operation.method.upper()} {operation.path}"

        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples every run: a failure reproduces
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(base_url=base_url, headers=AUTH, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{label}: {exc}")
        fuzzed.append(label)
    return fuzzed, failures


async def test_fuzzed_requests_never_get_a_server_error(api: ApiEnv) -> None:
    # Some state to read: a finished run (with a mapped node) and a failed one.
    for run_id in [await api.trigger("report", {"rows": 3}), await api.trigger("broken")]:
        await api.wait(run_id)
    raw = (await api.anon.get("/openapi.json")).json()
    async with asyncio.timeout(120):
        fuzzed, failures = await asyncio.to_thread(_fuzz, raw, api.url)
    assert len(fuzzed) == 17, fuzzed  # every route but the two event streams
    assert not failures, "\n\n".join(failures)
