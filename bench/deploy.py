"""Conveyor as users deploy it, for the benchmark: every component its own OS process.

    nats-server -js                                   (events.EmbeddedServer, temp store)
    python -m orchestrator.cli orchestrator --db ...  (one)
    python -m orchestrator.cli worker bench/flows.py  (N, each with `worker_args`)

with `CONVEYOR_NATS_URL` / `CONVEYOR_NAMESPACE` in their environment and otherwise the CLI's
default settings: what a user who follows the README gets. `TUNED` is the one variant with
settings of its own (reported beside the defaults, labelled). The orchestrator can be
killed with SIGKILL and started again on the same store (the recovery workload), and its
memory read from /proc (VmHWM, the peak resident set, can be reset between measurements).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.flows import CHAIN_ENV
from events import EmbeddedServer, Topology
from events.errors import BusUnavailable, TopologyMissing
from orchestrator.client import Client

ROOT = Path(__file__).resolve().parents[1]
FLOWS = Path(__file__).with_name("flows.py")
NAMESPACE = "bench"
WORKFLOWS = ("bench_chain", "bench_fanout", "bench_small", "bench_one", "bench_w2")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Variant:
    """How Conveyor's processes are started: `workers` worker processes with `worker_args`."""

    name: str
    label: str
    workers: int = 1
    worker_args: tuple[str, ...] = ()


DEFAULTS = Variant("conveyor-defaults", "Conveyor, CLI defaults (1 worker)")
# The settings of the README's earlier figures: a worker that takes 64 tasks at a time.
TUNED = Variant(
    "conveyor-tuned", "Conveyor, tuned (1 worker, --concurrency 64)", 1, ("--concurrency", "64")
)
VARIANTS = {v.name: v for v in (DEFAULTS, TUNED)}


class Deployment:
    """nats-server + one orchestrator + `workers` worker processes, on one host."""

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 1,
        worker_args: tuple[str, ...] = (),
        chain_length: int = 50,
        db: Path | None = None,
        server: EmbeddedServer | None = None,
    ) -> None:
        self.workdir = workdir
        self.workers = workers
        self.worker_args = worker_args
        self.chain_length = chain_length
        self.db = db or workdir / "conveyor.db"
        # A server handed in is shared (and stopped by its owner); otherwise ours.
        self._own_server = server is None
        self.server = server or EmbeddedServer(store_dir=workdir / "nats")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.client: Client | None = None
        self._restarts = 0

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        # Only our settings: a CONVEYOR_PARTITIONS (say) left in the shell would make the
        # processes disagree with this one's topology.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        return {
            **inherited,
            "CONVEYOR_NATS_URL": self.server.url,
            "CONVEYOR_NAMESPACE": NAMESPACE,
            CHAIN_ENV: str(self.chain_length),
        }

    async def start(self) -> Client:
        """Start everything, wait until it serves; returns a connected client."""
        if self._own_server:
            self.server.start()  # on the loop thread: the server dies with it (PDEATHSIG)
        self.spawn_orchestrator()
        for index in range(self.workers):
            self._spawn(
                f"worker-{index}", "worker", str(FLOWS.relative_to(ROOT)), *self.worker_args
            )
        self.client = await Client.connect(self.url, Topology(namespace=NAMESPACE))
        await self.wait_ready()
        return self.client

    def spawn_orchestrator(self) -> subprocess.Popen[bytes]:
        name = "orchestrator" if not self._restarts else f"orchestrator-{self._restarts}"
        self._restarts += 1
        proc = self._spawn(name, "orchestrator", "--db", str(self.db))
        self.processes["orchestrator"] = proc
        return proc

    def _spawn(self, name: str, command: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", command, *args],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = proc
        return proc

    @property
    def orchestrator_pid(self) -> int:
        return self.processes["orchestrator"].pid

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for n, p in self.processes.items() if n.startswith("worker-")]

    def pids(self) -> dict[str, int]:
        out = {n: p.pid for n, p in self.processes.items() if p.poll() is None}
        if self.server.proc is not None:
            out["nats-server"] = self.server.proc.pid
        return out

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                raise RuntimeError(
                    f"conveyor {name} exited with {proc.returncode}:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} log ---\n{self.log_tail(name)}" for name in sorted(self.processes)
        )

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the workers registered every workflow and the orchestrator answers its API."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                registered = [await self.client.registry.latest_version(n) for n in WORKFLOWS]
            except TopologyMissing:  # the orchestrator has not created the topology yet
                registered = [None]
            try:
                await self.client.status("bench-readiness-probe")  # None once the API serves
                serving = True
            except BusUnavailable:
                serving = False
            if serving and None not in registered:
                await self._probe_run(deadline - time.monotonic())
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not ready within {timeout}s (api serving: {serving}, "
                    f"workflow versions: {registered})\n{self.logs()}"
                )
            await asyncio.sleep(0.05)

    async def _probe_run(self, timeout: float) -> None:
        """One run of `bench_one` to its end: the orchestrator dispatches and a worker serves."""
        assert self.client is not None
        run_id = await self.client.trigger("bench_one", {"start": 0})
        try:
            final = await self.client.wait(run_id, timeout=max(timeout, 1.0))
        except TimeoutError:
            raise TimeoutError(f"probe run {run_id} did not end in time\n{self.logs()}") from None
        if final["status"] != "succeeded":
            raise RuntimeError(f"probe run {run_id} ended {final['status']}\n{self.logs()}")

    def kill_orchestrator(self) -> None:
        proc = self.processes["orchestrator"]
        proc.kill()  # SIGKILL
        proc.wait()

    async def stop(self) -> None:
        """SIGTERM every process, then SIGKILL what is still there after a timeout."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
            self.client = None
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._own_server:
            await asyncio.to_thread(self.server.stop)


# ---- /proc ----------------------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS), or None when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False if denied."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


# ---- a core-NATS tap on the event subjects ---------------------------------------------------


class EventTap:
    """Every event published on `<ns>.evt.>` as it goes by (core NATS: sees it, takes nothing).

    Handlers are called with (subject, headers, body, arrival time.time()); `ce-time` is in
    the headers. A run's events are on `<ns>.evt.<p>.<noun>.<verb>.<run_id>`. Subscribe to
    narrow patterns: every message costs this (the benchmark's) process CPU."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._subs: list[Any] = []
        self._handlers: list[Handler] = []

    def add(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def start(self, *patterns: str) -> None:
        async def on_message(subject: str, headers: Mapping[str, str], body: bytes) -> None:
            now = time.time()
            for handler in self._handlers:
                handler(subject, headers, body, now)

        for pattern in patterns:
            self._subs.append(await self.client.bus.subscribe(f"{NAMESPACE}.{pattern}", on_message))
        await self.client.bus.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()


@dataclass(slots=True)
class Outcome:
    """A run's end as its run.succeeded / failed / cancelled event told it."""

    run_id: str
    status: str
    ce_time: float | None
    arrived: float
    data: dict[str, Any]


class Outcomes:
    """Waits for runs to end by their outcome events (no status polling: a poll loads the
    orchestrator that is being measured)."""

    PATTERNS = ("evt.*.run.succeeded.*", "evt.*.run.failed.*", "evt.*.run.cancelled.*")

    def __init__(self) -> None:
        self.ended: dict[str, Outcome] = {}
        self._waiters: dict[str, asyncio.Future[Outcome]] = {}
        self.on_end: Callable[[Outcome], None] | None = None

    def handler(self, subject: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
        noun, verb, run_id = subject_parts(subject)
        if noun != "run" or verb not in ("succeeded", "failed", "cancelled"):
            return
        if run_id in self.ended:
            return
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
        outcome = Outcome(run_id, verb, ce_time(headers), now, data)
        self.ended[run_id] = outcome
        waiter = self._waiters.pop(run_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)
        if self.on_end is not None:
            self.on_end(outcome)

    async def wait(self, run_id: str, timeout: float) -> Outcome:
        if run_id in self.ended:
            return self.ended[run_id]
        waiter = self._waiters.setdefault(run_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise TimeoutError(f"run {run_id} did not end within {timeout}s") from None


def subject_parts(subject: str) -> tuple[str, str, str]:
    """(noun, verb, run_id) of `<ns>.evt.<p>.<noun>.<verb>.<run_id>`."""
    parts = subject.split(".")
    return parts[3], parts[4], parts[5]


def ce_time(headers: Mapping[str, str]) -> float | None:
    """The `ce-time` header as a POSIX timestamp (it is RFC 3339 with microseconds, UTC)."""
    import datetime as dt

    raw = headers.get("ce-time")
    if not raw:
        return None
    try:
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
    interval: float = 0.01,
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


Handler = Callable[[str, Mapping[str, str], bytes, float], None]
