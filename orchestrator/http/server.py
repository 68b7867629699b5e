"""Serving the app inside a running event loop (`conveyor dev`, `conveyor api`, tests).

uvicorn's `Server.serve` is built to own its process: it installs signal handlers (and
re-raises the signals when it stops) and configures logging. Embedded in Conveyor, the host
process owns both, so `ApiServer` turns those off. It also ends the app's live streams before
the graceful shutdown: SSE responses never finish on their own, and uvicorn waits for open
responses before it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI

from .app import close_streams, open_streams

STARTUP_TIMEOUT_S = 10.0


class _EmbeddedUvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the host process handles signals and tells us to stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_streams(self._app)
        await super().shutdown(sockets)


class ApiServer:
    """`await ApiServer(app, port=0).start()` serves on a bound port; `.url`; `await .stop()`."""

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        access_log: bool = False,
        graceful_timeout_s: int = 5,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app,
            log_config=None,  # leave the host's logging set-up alone
            access_log=access_log,
            lifespan="off",  # the app holds no resources of its own: its owner does
            timeout_graceful_shutdown=graceful_timeout_s,
        )
        self._server = _EmbeddedUvicorn(config, app)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> ApiServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Bound here rather than by uvicorn, so port 0 gives a port we can read back, and a
        # port in use is an OSError for the caller (uvicorn would sys.exit).
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = sock.getsockname()[1]
        open_streams(self.app)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                while not self._server.started:
                    if self._task.done():
                        await self._task  # raises what stopped it
                        raise RuntimeError("the HTTP server stopped during start-up")
                    # uvicorn offers no start-up event to await; start-up takes milliseconds.
                    await asyncio.sleep(0.01)
        except BaseException:
            self._task.cancel()
            self._task = None
            sock.close()
            raise
        return self

    async def wait(self) -> None:
        """Until the server stops."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._task = None

    async def __aenter__(self) -> ApiServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve `app` until `stop` is set (or this coroutine is cancelled: the server shuts
    down gracefully, then the cancellation propagates). Returns once the server stopped.

    `on_ready(url)` is called once the port is bound (e.g. to print the dashboard URL)."""
    server = await ApiServer(app, host, port).start()
    if on_ready is not None:
        on_ready(server.url)
    try:
        if stop is None:
            await server.wait()
            return
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {stopped, asyncio.ensure_future(server.wait())}, return_when="FIRST_COMPLETED"
            )
        finally:
            stopped.cancel()
    finally:
        await server.stop()
