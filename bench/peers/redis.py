"""A redis-server of our own for the Celery peer: a free loopback port, a temp dir, stopped by PID.

The binary is Debian's (`apt-get install redis-server`); `ensure_installed` installs it when it
is missing and this process may (root), and otherwise says what to run. The server runs with
its defaults (no config file) apart from where it listens and keeps its files; it is ready
when it logs "Ready to accept connections", which is awaited (bounded), not slept for.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
INSTALL_TIMEOUT_S = 600.0
READY_LINE = "Ready to accept connections"


class RedisUnavailable(RuntimeError):
    """redis-server is not installed and could not be."""


def ensure_installed() -> str:
    """The path of redis-server, installing Debian's package first when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RedisUnavailable(
            "redis-server not found; install it with: apt-get install -y redis-server"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise RedisUnavailable(
                f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-800:]}"
            )
    found = shutil.which("redis-server")
    if not found:
        raise RedisUnavailable("apt-get installed redis-server but it is not on PATH")
    return found


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """`with RedisServer(workdir) as redis:` ... `redis.url`."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.version = "unknown"
        self._log: collections.deque[str] = collections.deque(maxlen=200)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        binary = ensure_installed()
        banner = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        # "Redis server v=7.0.15 sha=... malloc=... bits=64 build=..."
        found = re.search(r"v=(\S+)", banner)
        self.version = f"redis-server {found.group(1) if found else banner.strip()}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A port found free can be taken before the server binds it: try a few.
        for _ in range(3):
            self.port = _free_port(self.host)
            if self._try_start(binary):
                return self
        raise RuntimeError(f"redis-server did not start:\n{''.join(self._log)}")

    def _try_start(self, binary: str) -> bool:
        self._log.clear()
        self.proc = subprocess.Popen(
            [binary, "--bind", self.host, "--port", str(self.port), "--dir", str(self.workdir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._read, args=(self.proc, ready), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.wait(0.05):
            if self.proc.poll() is not None:
                return False  # the port was taken meanwhile (or another failure: logged)
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"redis-server not ready within {READY_TIMEOUT_S}s:\n{''.join(self._log)}"
                )
        return True

    def _read(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        # Keeps draining its output so that the pipe never fills and blocks the server.
        assert proc.stdout is not None
        for line in proc.stdout:
            self._log.append(line)
            if READY_LINE in line:
                ready.set()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
