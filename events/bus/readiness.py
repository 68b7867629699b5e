"""Telling JetStream's "not yet" from its "no", and asking again while the answer is "not yet".

A clustered stream (or the meta group) that has lost its leader answers nothing, "temporarily
unavailable" or "no suitable peers" for the few seconds its survivors take to elect another
(measured: 2-10 s after kill -9 of a node). A lookup made in that window is asked again rather
than reported: the caller waits through an election as it would through a slow answer, and a
refusal that no wait can cure (a missing stream, a closed connection) still ends at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
import structlog

# The meta group has no leader (10008, also code 503), or too few servers have joined it to
# place the replicas (10005 no suitable peers, 10023 insufficient resources).
NOT_READY_CODES = frozenset({10005, 10008, 10023})
# How long a lookup rides out an election before it reports the failure it last saw.
ELECTION_WAIT_S = 30.0

_log = structlog.get_logger("conveyor.bus")
T = TypeVar("T")


def jetstream_not_ready(exc: BaseException | None) -> bool:
    """Whether a JetStream API failure means "not yet" (a leader is being elected)."""
    if isinstance(exc, (nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        return True
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in NOT_READY_CODES


async def ask_until_ready(
    what: str,
    ask: Callable[[], Awaitable[T]],
    timeout_s: float = ELECTION_WAIT_S,
    not_ready: Callable[[BaseException], bool] = jetstream_not_ready,
) -> T:
    """`ask()`, asked again with a growing pause while it fails with "not yet", for up to
    `timeout_s`; then (or on any other failure) its last exception is raised as it was."""
    deadline = time.monotonic() + timeout_s
    pause = 0.25
    while True:
        try:
            return await ask()
        except Exception as exc:
            if not not_ready(exc) or time.monotonic() >= deadline:
                raise
            _log.info("JetStream not ready; asking again", what=what, error=str(exc) or repr(exc))
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(2.0, pause * 2)
