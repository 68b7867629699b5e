"""`/metrics` and `/healthz` on one port, for Prometheus and for probes (Kubernetes, compose).

    GET /metrics   the process's Prometheus registry, in the text exposition format
    GET /healthz   200 "ok" while every supervised component runs; 503 once one has failed or
                   the process is stopping (so a liveness probe restarts a wedged process and a
                   readiness probe stops routing to a draining one)

A component of its own, served on the event loop (asyncio streams, HTTP/1.0: one request per
connection) rather than prometheus_client's thread, so that it starts, stops and fails under
the same supervision as everything else, and a port in use is a start-up error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_READ_TIMEOUT_S = 5.0


class HealthServer:
    name = "health-server"

    def __init__(
        self,
        registry: CollectorRegistry,
        healthy: Callable[[], bool],
        port: int,
        host: str = "127.0.0.1",
    ) -> None:
        self.registry = registry
        self.healthy = healthy
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def run(self) -> None:
        await self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()

    async def drain(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT_S)
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, kind, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, kind, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif path in ("/healthz", "/readyz"):
                ok = self.healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                kind, body = "text/plain", b"ok\n" if ok else b"unhealthy\n"
            else:
                status, kind, body = "404 Not Found", "text/plain", b"/metrics or /healthz\n"
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if parts[:1] == ["HEAD"] else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
