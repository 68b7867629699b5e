"""The acks of a batch of pipelined publishes, counted down by callbacks: one call of `then`
when JetStream acked them all, or with the error when one failed or `timeout` passed first.

What `Connection.send_many`'s waiter does (gather the acks' futures, `wait_for` them, map the
error) without a task to await it, a gathering future and a `wait_for` per batch: the engine
confirms every batch it publishes this way, and in a chain every batch is one event. One timer
per batch and one callback per message remain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import nats.errors
import nats.js.errors
from nats.js import api

from events.errors import BusError, BusUnavailable

Then = Callable[[BusError | None], None]


class AckCountdown:
    def __init__(
        self,
        futures: Sequence[asyncio.Future[api.PubAck]],
        then: Then,
        timeout: float,
        refused: Callable[[nats.js.errors.APIError], BusError],
        closed: Callable[[BaseException], BusError],
    ) -> None:
        self._futures = futures
        self._then: Then | None = then
        self._left = len(futures)
        self._refused = refused
        self._closed = closed
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout, self._expired)
        if not futures:
            self._end(None)
        for future in futures:
            future.add_done_callback(self._acked)

    def _acked(self, future: asyncio.Future[api.PubAck]) -> None:
        if self._then is None:
            return
        if future.cancelled():
            self._end(self._closed(nats.errors.ConnectionClosedError()))
            return
        error = future.exception()
        if error is not None:
            self._end(self._error(error))
            return
        self._left -= 1
        if self._left == 0:
            self._end(None)

    def _error(self, exc: BaseException) -> BusError:
        what = f"JetStream did not ack {len(self._futures)} messages"
        if isinstance(exc, nats.js.errors.NoStreamResponseError | TimeoutError):
            return BusUnavailable(f"{what}: {exc!r}")
        if isinstance(exc, nats.js.errors.APIError):
            return self._refused(exc)
        return self._closed(exc)

    def _expired(self) -> None:
        # (nats-py 2.16 never completes the future of a pipelined publish JetStream refused:
        # its reply handler raises instead. A refusal shows as this timeout.)
        self._end(self._error(TimeoutError()))

    def _end(self, error: BusError | None) -> None:
        then, self._then = self._then, None
        if then is None:
            return
        self._timer.cancel()
        for future in self._futures:
            if not future.done():
                future.cancel()
        then(error)
