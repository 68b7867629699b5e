"""A blocking client for threads and web frameworks (Flask, Django, scripts): the async `Client`
run on an event loop of its own, in a background thread.

    from orchestrator import SyncClient

    client = SyncClient("nats://127.0.0.1:4222")   # once per process (after a fork: per worker)
    run_id = client.trigger("hello", {"name": "Ada"})
    final = client.wait(run_id, timeout=60)
    client.close()

Every method is the async client's, with the same arguments, return values and errors
(UnknownWorkflow, InvalidInput, UnknownRun, RunRefused, BusUnavailable, TimeoutError). Any number
of threads may call one `SyncClient` at once: each call is a coroutine submitted to the client's
loop, and the calling thread blocks until it is done (or `call_timeout_s` has passed). In async
code (an `async def` endpoint) use `Client` instead: a blocking call there stalls the server's
own event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, TypeVar

from events.settings import NatsSettings
from events.topology import Topology
from orchestrator.client import SOURCE, Client, Published

T = TypeVar("T")
# How long a call other than `wait` may take before the caller stops waiting for it: a NATS
# request is answered in milliseconds, and a publish fails after 5 s without an ack.
CALL_TIMEOUT_S = 30.0


class SyncClient:
    def __init__(
        self,
        nats: NatsSettings | str | None = None,
        topology: Topology | None = None,
        *,
        source: str = SOURCE,
        actor: str | None = None,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        """Connect (blocking) to NATS: `nats` as for `Client.connect` (default: the
        `CONVEYOR_NATS_*` environment and `conveyor.toml`). BusUnavailable when it cannot."""
        self.call_timeout_s = call_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="conveyor-sync-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._client = self._call(
                Client.connect(nats, topology, source=source, actor=actor), call_timeout_s
            )
        except BaseException:
            self._stop_loop()
            raise

    # ---- the async client's methods, blocking ----------------------------------------------
    def trigger(
        self,
        workflow: str,
        input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        version: int | None = None,
        run_id: str | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Start a run; its id once JetStream holds the request (see `Client.trigger`)."""
        return self._call(
            self._client.trigger(
                workflow,
                input,
                idempotency_key=idempotency_key,
                version=version,
                run_id=run_id,
                traceparent=traceparent,
            )
        )

    def wait(
        self,
        run_id: str,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        newer_than: float | None = None,
    ) -> dict[str, Any]:
        """Block until the run ends (TimeoutError after `timeout` s; the run carries on).
        `on_update(status)` is called on the client's thread with each new status."""
        return self._call(
            self._client.wait(run_id, on_update=on_update, timeout=timeout, newer_than=newer_than),
            None,
        )

    def status(self, run_id: str) -> dict[str, Any] | None:
        """The run's committed state, or None when the orchestrator does not know it (yet)."""
        return self._call(self._client.status(run_id))

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> None:
        self._call(self._client.cancel(run_id, reason))

    def retry(self, run_id: str, reason: str = "retried by request") -> None:
        self._call(self._client.retry(run_id, reason))

    def runs(
        self, workflow: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        return self._call(self._client.runs(workflow, status, limit))

    def publish(
        self,
        type: str,
        data: Any = None,
        *,
        source: str | None = None,
        id: str | None = None,
        subject: str | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> Published:
        """Publish any CloudEvent for triggers and waits (see `Client.publish`)."""
        return self._call(
            self._client.publish(
                type, data, source=source, id=id, subject=subject, extensions=extensions
            )
        )

    # ---- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection and stop the client's thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._shutdown(), self.call_timeout_s)
        finally:
            self._stop_loop()

    async def _shutdown(self) -> None:
        # Calls still blocked in other threads (a `wait` without a timeout) end now, with an
        # error, rather than never.
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._client.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- the bridge ------------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = -1.0) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this SyncClient is closed")
        return self._run(coro, self.call_timeout_s if timeout == -1.0 else timeout)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            # The loop would wait for itself: an on_update callback must not call back in.
            raise RuntimeError("a SyncClient cannot be called from its own callbacks")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():
                raise  # the coroutine's own (`wait`'s timeout)
            future.cancel()
            raise TimeoutError(f"the call did not finish within {timeout} s") from None
        except concurrent.futures.CancelledError:
            raise RuntimeError("the SyncClient was closed during the call") from None

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


__all__ = ["SyncClient"]
