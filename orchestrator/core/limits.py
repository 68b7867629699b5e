"""A limiter: one concurrency limit or rate limit for one key, as a pure state machine.

    apply_limiter(limiter, event, now) -> FlowTransition

A limiter is the single owner of a limit's count (docs/flow-control.md): it lives on the
partition of its id, and runs on any partition ask it for slots with events. Its state is its
entries — holders (granted) and waiters (queued, by priority) — and its commands are events back
to the runs (granted, refused, cancel-requested for `cancel_oldest`) and, for a rate limit, a
durable timer for the moment the oldest grant leaves the window.

    limit.requested   a waiter joins the queue; an admission pass follows
    limit.released    a holder leaves (its attempt or run ended, or it no longer wanted the
                      slot; a rate token never used is given back); an admission pass follows
    flow.timer-fired  the rate window moved on; an admission pass follows

An admission pass grants waiters in queue order while fewer than `limit` are held (for a rate
limit: granted within the last `per_s` seconds). A rate limiter's passes run only on its own
timer events, a request or a release asking for one due at once: every event is applied at its
time in the stream, and a request applied late (it waited while the limiter's partition was
down or taken over) carries an old time, by which the window would have room for every request
that piled up meanwhile — a burst. A timer's event is stored when the shell fired it, so the
window is kept by the real times of the admissions (docs/flow-control.md, "Time").

The queue's order is a pure function of the arrivals: virtual time
`enqueued_at - priority * PRIORITY_AGING_S`, then arrival order — higher priorities first, and a
request is only ever passed by requests that arrived less than 9 * PRIORITY_AGING_S after it, so
nothing starves.

Pure: no I/O, no clock. Each event is applied exactly once (the engine's processed-id check),
so a request id seen twice is a contract breach the limiter shrugs off rather than counts.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from events.ids import derived_id
from events.models import (
    FLOW_TIMER_FIRED,
    LIMIT_GRANTED,
    LIMIT_REFUSED,
    RUN_CANCEL_REQUESTED,
    FlowTimerFired,
    LimitGranted,
    LimitRefused,
    LimitReleased,
    LimitRequested,
    RunCancelRequested,
)
from orchestrator.core.commands import CancelTimer, Command, Emit

PRIORITY_AGING_S = 60.0  # one priority level is worth this long a wait
LIMITER = "limiter"

LimiterEvent = LimitRequested | LimitReleased | FlowTimerFired


@dataclass(slots=True)
class Entry:
    """One request: waiting in the queue, or holding a slot (a rate token: granted at)."""

    request: str
    run_id: str
    node_id: str | None
    attempt: int
    priority: int
    since: float  # when it was queued
    rank: tuple[float, int]  # (virtual time, arrival): the queue's order
    holding: bool = False
    granted_at: float | None = None
    evicting: bool = False  # cancel_oldest asked its run to stop

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rank"] = list(self.rank)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        return cls(**{**d, "rank": tuple(d["rank"])})


@dataclass(slots=True)
class Limiter:
    entity_id: str
    scope: str  # "run", "task" or "rate"
    name: str  # the workflow or the task
    key: str
    limit: int
    per_s: float | None = None
    on_limit: str = "queue"
    holding: int = 0
    waiting: int = 0
    arrivals: int = 0  # requests ever queued: the arrival order
    timers: int = 0  # timers ever started: their ids
    timer: str | None = None  # the pending timer
    timer_due: float | None = None
    updated_at: float = 0.0
    entries: dict[str, Entry] = field(default_factory=dict)
    # Derived from the entries when loaded, not stored: the queue as a heap of (rank, request),
    # and a rate limit's grants in the order they were made. Both skip entries gone since.
    queue: list[tuple[tuple[float, int], str]] = field(default_factory=list, repr=False)
    window: deque[str] = field(default_factory=deque, repr=False)

    kind = LIMITER

    def header_dict(self) -> dict[str, Any]:
        return {
            "entity_id": self.entity_id,
            "kind": LIMITER,
            "scope": self.scope,
            "name": self.name,
            "key": self.key,
            "limit": self.limit,
            "per_s": self.per_s,
            "on_limit": self.on_limit,
            "holding": self.holding,
            "waiting": self.waiting,
            "arrivals": self.arrivals,
            "timers": self.timers,
            "timer": self.timer,
            "timer_due": self.timer_due,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_parts(cls, header: dict[str, Any], entries: list[dict[str, Any]]) -> Limiter:
        fields = {k: v for k, v in header.items() if k != "kind"}
        limiter = cls(**fields)
        for raw in entries:
            entry = Entry.from_dict(raw)
            limiter.entries[entry.request] = entry
        limiter.queue = [(e.rank, e.request) for e in limiter.entries.values() if not e.holding]
        heapq.heapify(limiter.queue)
        if limiter.per_s is not None:
            held = [(e.granted_at or 0.0, e.request) for e in limiter.entries.values() if e.holding]
            limiter.window = deque(request for _, request in sorted(held))
        return limiter


@dataclass(slots=True)
class FlowTransition:
    """What applying one event to a limiter or a collector produced."""

    entity: Any  # Limiter | Collector
    commands: list[Command] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # entry ids written (or deleted)
    applied: bool = True
    created: bool = False


def new_limiter(event: LimitRequested) -> Limiter:
    return Limiter(
        event.limiter, event.scope, event.name, event.key, event.limit, event.per_s, event.on_limit
    )


def apply_limiter(limiter: Limiter | None, event: LimiterEvent, now: float) -> FlowTransition:
    """Apply `event` to `limiter` (None: a request creates it) in place."""
    if limiter is None:
        if not isinstance(event, LimitRequested):
            # A release or a timer for a limiter that never existed: nothing to do.
            return FlowTransition(None, applied=False)
        out = FlowTransition(new_limiter(event), created=True)
    else:
        out = FlowTransition(limiter)
    step = _Step(out.entity, now, out)
    if isinstance(event, LimitRequested):
        out.applied = step.requested(event)
    elif isinstance(event, LimitReleased):
        out.applied = step.released(event)
    else:
        out.applied = step.timer_fired(event)
    if out.applied:
        out.entity.updated_at = now
    return out


class _Step:
    __slots__ = ("limiter", "now", "out")

    def __init__(self, limiter: Limiter, now: float, out: FlowTransition) -> None:
        self.limiter = limiter
        self.now = now
        self.out = out

    # ---- the three events ------------------------------------------------------------------
    def requested(self, event: LimitRequested) -> bool:
        lim = self.limiter
        if event.request in lim.entries:
            return False
        # The configuration travels with each request: the latest one is in force.
        lim.limit, lim.per_s, lim.on_limit = event.limit, event.per_s, event.on_limit
        if event.on_limit == "cancel_newest" and not self.has_room(queue_empty=True):
            self.refuse(event)
            return True
        lim.arrivals += 1
        rank = (self.now - event.priority * PRIORITY_AGING_S, lim.arrivals)
        entry = Entry(
            event.request,
            event.run_id,
            event.node_id,
            event.attempt,
            event.priority,
            self.now,
            rank,
        )
        lim.entries[entry.request] = entry
        heapq.heappush(lim.queue, (rank, entry.request))
        lim.waiting += 1
        self.out.changed.add(entry.request)
        self.admit(asked=True)
        if event.on_limit == "cancel_oldest" and not entry.holding:
            self.evict_oldest(event)
        return True

    def released(self, event: LimitReleased) -> bool:
        entry = self.limiter.entries.get(event.request)
        if entry is None:
            return False  # a rate token that already left its window
        self.remove(entry)
        self.admit(asked=False)
        return True

    def timer_fired(self, event: FlowTimerFired) -> bool:
        lim = self.limiter
        if event.timer_id == lim.timer:
            # Applied at its due time at the earliest: the shell fired it by its own clock,
            # and the event's time in the stream may be behind that (another machine's clock).
            # Admitting earlier would find the window unchanged and set the same timer again.
            self.now = max(self.now, lim.timer_due or self.now)
            lim.timer = lim.timer_due = None
        self.admit(asked=False, on_timer=True)
        return True

    # ---- the rules -------------------------------------------------------------------------
    def has_room(self, *, queue_empty: bool = False) -> bool:
        lim = self.limiter
        if queue_empty and lim.waiting:
            return False
        if lim.per_s is not None:
            self.forget_expired()
        return lim.holding < lim.limit

    def admit(self, *, asked: bool, on_timer: bool = False) -> None:
        """Grant waiters in queue order while there is room; for a rate limit, come back when
        the oldest grant leaves the window. A rate limit admits on its own timer only (see the
        module's doc): a request wakes it at once unless a wake-up is pending (it comes back
        here then: the window cannot free earlier); a token given back, at once."""
        lim = self.limiter
        if lim.per_s is not None and not on_timer:
            if lim.waiting and not (asked and lim.timer is not None):
                self.wake_at(self.now)
            return
        while lim.waiting and self.has_room():
            rank, request = heapq.heappop(lim.queue)
            entry = lim.entries.get(request)
            if entry is None or entry.holding or entry.rank != rank:
                continue  # gone since it was queued
            self.grant(entry)
        if lim.per_s is not None and lim.waiting:
            self.wake_when_room()

    def grant(self, entry: Entry) -> None:
        lim = self.limiter
        entry.holding = True
        entry.granted_at = self.now
        lim.waiting -= 1
        lim.holding += 1
        if lim.per_s is not None:
            lim.window.append(entry.request)
        self.out.changed.add(entry.request)
        granted = LimitGranted(
            run_id=entry.run_id,
            node_id=entry.node_id,
            attempt=entry.attempt,
            request=entry.request,
            limiter=lim.entity_id,
        )
        self.out.commands.append(
            Emit(LIMIT_GRANTED, entry.run_id, granted, f"granted:{entry.request}")
        )

    def refuse(self, event: LimitRequested) -> None:
        lim = self.limiter
        key = f" for key {lim.key!r}" if lim.key else ""
        reason = (
            f"concurrency limit of {lim.name!r}{key} reached ({lim.holding} of {lim.limit} "
            "running; on_limit: cancel_newest)"
        )
        refused = LimitRefused(
            run_id=event.run_id, request=event.request, limiter=lim.entity_id, reason=reason
        )
        self.out.commands.append(
            Emit(LIMIT_REFUSED, event.run_id, refused, f"refused:{event.request}")
        )

    def evict_oldest(self, newcomer: LimitRequested) -> None:
        """cancel_oldest: ask the oldest holder not already asked to stop. Its slot goes to the
        queue when its run's release arrives: the limit holds meanwhile."""
        held = [e for e in self.limiter.entries.values() if e.holding and not e.evicting]
        if not held:
            return  # every holder is on its way out: the newcomer is next in line
        oldest = min(held, key=lambda e: (e.granted_at or 0.0, e.rank[1]))
        oldest.evicting = True
        self.out.changed.add(oldest.request)
        lim = self.limiter
        key = f" for key {lim.key!r}" if lim.key else ""
        reason = (
            f"cancelled by the concurrency limit of {lim.name!r}{key}: a newer run "
            f"({newcomer.run_id}) takes its place (on_limit: cancel_oldest)"
        )
        cancel = RunCancelRequested(run_id=oldest.run_id, reason=reason)
        self.out.commands.append(
            Emit(RUN_CANCEL_REQUESTED, oldest.run_id, cancel, f"evicted:{oldest.request}")
        )

    def remove(self, entry: Entry) -> None:
        lim = self.limiter
        del lim.entries[entry.request]
        if entry.holding:
            lim.holding -= 1
        else:
            lim.waiting -= 1
        self.out.changed.add(entry.request)

    def forget_expired(self) -> None:
        """A rate limit's grants older than its window no longer count."""
        lim = self.limiter
        assert lim.per_s is not None
        while lim.window:
            entry = lim.entries.get(lim.window[0])
            if entry is not None and entry.holding:
                if (entry.granted_at or 0.0) + lim.per_s > self.now:
                    return
                self.remove(entry)
            lim.window.popleft()

    def wake_when_room(self) -> None:
        lim = self.limiter
        assert lim.per_s is not None
        oldest = lim.entries[lim.window[0]]
        self.wake_at((oldest.granted_at or 0.0) + lim.per_s)

    def wake_at(self, due: float) -> None:
        lim = self.limiter
        if lim.timer is not None and lim.timer_due is not None and lim.timer_due <= due:
            return  # an earlier wake-up is pending: it comes back here
        if lim.timer is not None:
            self.out.commands.append(CancelTimer(lim.timer))
        lim.timers += 1
        key = f"timer:{lim.timers}"
        lim.timer, lim.timer_due = f"{lim.entity_id}:{key}", due
        fired = FlowTimerFired(entity=lim.entity_id, timer_id=lim.timer)
        self.out.commands.append(Emit(FLOW_TIMER_FIRED, lim.entity_id, fired, key, due_at=due))


def position(limiter: Limiter, request: str) -> int | None:
    """1 for the next in line; None when `request` is not waiting."""
    entry = limiter.entries.get(request)
    if entry is None or entry.holding:
        return None
    return 1 + sum(1 for e in limiter.entries.values() if not e.holding and e.rank < entry.rank)


def limiter_id(scope: str, name: str, key: str) -> str:
    """The limiter of one limit (`run` concurrency of a workflow, `task` concurrency or `rate`
    limit of a task) for one key: its events' subject token, hence its partition."""
    return derived_id("limit", scope, name, key)
