"""When each event is applied: its time in the event stream, per partition, as committed.

Every decision that reads the time — a rate limit's window, priority aging, a debounce or batch
window, a retry's backoff, a timer's due time — is taken at the time of the event being applied
(`core.rules.applied_at`): its JetStream timestamp, never earlier than the last event its
partition applied. A successor replaying a partition's tail (lease mode), the owner that applied
it first and a projection reading it therefore decide the same, whatever their clocks and
wherever their batches end. The wall clock only says when the shell *fires* a timer (publishes
its row); the timer's event is then applied at its own time in the stream.

The last time per partition is committed with the batch that applied it (the `positions` table,
`clock.p<n>`, in microseconds), so a restart or a restored snapshot continues from it; a batch
that fails to commit is forgotten (`EventClock.forget`), and the next one reads it back.
"""

from __future__ import annotations

from events.bus import Delivery
from events.topology import Topology
from orchestrator.core.rules import applied_at
from orchestrator.runtime.store import Store

_US = 1_000_000


def _key(partition: int) -> str:
    return f"clock.p{partition}"


class BatchClock:
    """The times of one batch's events, in order; what it moved, to commit with the batch."""

    def __init__(self, last: dict[int, int], topology: Topology, default: int) -> None:
        self.last = last  # partition -> the last applied time (µs)
        self.moved: set[int] = set()
        self.latest_us = 0  # the latest time this batch applied at
        self._prefix = f"{topology.namespace}.evt."
        self._default = default

    def now(self, delivery: Delivery) -> float:
        """The time (epoch seconds) `delivery`'s event is applied at; moves its partition on."""
        partition = self.partition(delivery)
        now = applied_at(self.last.get(partition, 0), delivery.stored_us)
        self.last[partition] = now
        self.moved.add(partition)
        self.latest_us = max(self.latest_us, now)
        return now / _US

    def partition(self, delivery: Delivery) -> int:
        """From the subject (`<ns>.evt.<partition>.…`): every event, decodable or not."""
        token = delivery.subject[len(self._prefix) :].split(".", 1)[0]
        if delivery.subject.startswith(self._prefix) and token.isdigit():
            return int(token)
        return self._default

    def positions(self) -> dict[str, int]:
        return {_key(p): self.last[p] for p in self.moved}


class EventClock:
    """Each partition's last applied time, as committed (read from the store when not known)."""

    def __init__(self, store: Store, topology: Topology, partition: int) -> None:
        self.store = store
        self.topology = topology
        self.partition = partition
        self._committed: dict[int, int] = {}

    async def batch(self, deliveries: list[Delivery]) -> BatchClock:
        clock = BatchClock(dict(self._committed), self.topology, self.partition)
        # Its own partition too: the events a batch emits and applies at once are of it.
        wanted = {clock.partition(d) for d in deliveries} | {self.partition}
        for partition in wanted - clock.last.keys():
            clock.last[partition] = await self.store.position(_key(partition))
        return clock

    def keep(self, clock: BatchClock) -> None:
        """`clock`'s batch was applied: the next one starts where it ended (unless its commit
        fails: `forget`)."""
        self._committed.update(clock.last)

    def forget(self) -> None:
        """The batch did not commit: read the times back from the store next time."""
        self._committed.clear()
