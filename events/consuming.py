"""The one fetch-and-retry policy every consumer of ours shares (engine, projection, router,
notifier, workers).

A fetch that fails because the broker is briefly away (a restart, a leader election) is logged
and retried after a pause that doubles up to a ceiling, so a sick server is not hammered and a
recovered one is used at once. A connection closed for good (`BusClosed`) is not retried: it
propagates, the component ends, and its supervisor ends the process with a non-zero status so
that the process supervisor (systemd, Kubernetes, compose) starts a fresh one.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from events.bus import Delivery
from events.errors import BusClosed, BusError


class Source(Protocol):
    """What a Fetcher reads: a durable consumer (`Puller`) or an ordered reader."""

    name: str

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]: ...

    async def close(self) -> None: ...


_FIRST_PAUSE_S = 0.25
_MAX_PAUSE_S = 1.0


class Fetcher:
    def __init__(self, puller: Source, what: str) -> None:
        self.puller = puller
        self.what = what
        self._pause = _FIRST_PAUSE_S
        self._log = structlog.get_logger("conveyor.consumer").bind(consumer=what)

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """What the consumer holds (up to `batch`), [] after `timeout` — or [] after a pause
        when the broker failed the fetch."""
        try:
            deliveries = await self.puller.fetch(batch, timeout)
        except BusClosed:
            raise
        except BusError as exc:
            self._log.warning("fetch failed; retrying", error=str(exc), pause_s=self._pause)
            await asyncio.sleep(self._pause)
            self._pause = min(_MAX_PAUSE_S, self._pause * 2)
            return []
        self._pause = _FIRST_PAUSE_S
        return deliveries

    async def close(self) -> None:
        await self.puller.close()
