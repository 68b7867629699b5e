"""How busy the machine was with work that is not the benchmark's: the noise of a measurement.

Other engineers run test suites on the same 2-core machine. A sampler thread reads /proc/stat
(the machine's busy CPU time) and the CPU time of every process descended from this one (the
benchmark, nats-server, the orchestrator, the workers, floor and peer processes); the
difference is CPU used by everyone else, reported per workload as average and peak cores.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


def _process_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds used) for every process we can read."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        # fields after the name: state ppid ... utime(14th overall, index 11 here) stime
        table[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICKS)
    return table


def _ours(table: dict[int, tuple[int, float]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found


@dataclass
class _Window:
    samples: list[float] = field(default_factory=list)  # foreign cores per interval
    ours: list[float] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)


class NoiseMonitor:
    """`with monitor.window("hop"):` records foreign CPU use while the block runs."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.root = os.getpid()
        self.windows: dict[str, _Window] = {}
        self._active: list[_Window] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-noise", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        # Our processes' CPU time is tracked per pid, so that one that exits between two
        # samples (a floor worker) is not mistaken for foreign work.
        previous_busy = _machine_busy_s()
        previous_cpu: dict[int, float] = {}
        table = _process_table()
        for pid in _ours(table, self.root):
            previous_cpu[pid] = table[pid][1]
        previous_t = time.monotonic()
        while not self._stop.wait(self.interval_s):
            busy = _machine_busy_s()
            table = _process_table()
            ours = _ours(table, self.root)
            now = time.monotonic()
            elapsed = now - previous_t
            ours_used = sum(table[p][1] - previous_cpu.get(p, table[p][1]) for p in ours)
            # A process of ours that appeared during the interval: its whole CPU time counts.
            ours_used += sum(table[p][1] for p in ours if p not in previous_cpu)
            foreign = max(0.0, (busy - previous_busy) - ours_used) / elapsed
            with self._lock:
                for window in self._active:
                    window.samples.append(foreign)
                    window.ours.append(ours_used / elapsed)
            previous_busy, previous_t = busy, now
            previous_cpu = {p: table[p][1] for p in ours}

    def window(self, name: str) -> _Context:
        return _Context(self, name)

    def report(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, w in self.windows.items():
            if not w.samples:
                continue
            out[name] = {
                "foreign_cores_avg": round(sum(w.samples) / len(w.samples), 2),
                "foreign_cores_max": round(max(w.samples), 2),
                "ours_cores_avg": round(sum(w.ours) / len(w.ours), 2),
                "loadavg_1m_start_end": list(w.load),
            }
        return out


class _Context:
    def __init__(self, monitor: NoiseMonitor, name: str) -> None:
        self.monitor, self.name = monitor, name
        self._window = _Window()

    def __enter__(self) -> None:
        self._window.load = (os.getloadavg()[0], 0.0)
        with self.monitor._lock:
            self.monitor.windows[self.name] = self._window
            self.monitor._active.append(self._window)

    def __exit__(self, *exc: object) -> None:
        self._window.load = (round(self._window.load[0], 2), round(os.getloadavg()[0], 2))
        with self.monitor._lock:
            self.monitor._active.remove(self._window)
