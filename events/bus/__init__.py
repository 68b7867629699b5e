"""The only package that imports nats-py: connection, topology, publish, pull, KV, objects.

Every nats-py exception is translated into `events.errors` here, so the rest of Conveyor never
depends on the client library's types. `Bus` is one connection bound to one `Topology`; its
parts, one module each:

    connection.py  connect (seed list, credentials, TLS), close-for-good watch, publish,
                   request/reply, subscriptions
    confirming.py  a pipelined batch's acks, counted down by callbacks (`send_many_then`)
    pulling.py     `Delivery` and `Puller`: what durable pull consumers hand us
    fetching.py    one fetch: a pull request and its answer, read off nats-py's queue
    consumers.py   each component's durable consumer; short-lived stream readers
    storage.py     the KV bucket and the object store (opened, never created)
    leasing.py     lease mode: the lease table, fences, consumers per epoch, snapshots
    admin.py       the topology: applied by one process, checked by the others; inspection
"""

from __future__ import annotations

from events.bus.admin import Admin
from events.bus.connection import PublishItem
from events.bus.consumers import ORCHESTRATOR_ACK_WAIT_S
from events.bus.leasing import ConsumerState
from events.bus.pulling import (
    Delivery,
    KeptAlive,
    OrderedReader,
    Puller,
    keep_alive,
    settle_quietly,
)
from events.bus.storage import KvEntry
from events.settings import NatsSettings
from events.topology import Topology

__all__ = [
    "ORCHESTRATOR_ACK_WAIT_S",
    "Bus",
    "ConsumerState",
    "Delivery",
    "KeptAlive",
    "KvEntry",
    "OrderedReader",
    "PublishItem",
    "Puller",
    "keep_alive",
    "settle_quietly",
]


class Bus(Admin):
    """A connection to NATS bound to one `Topology`."""

    @classmethod
    async def connect(
        cls,
        settings: NatsSettings | str,
        topology: Topology | None = None,
        *,
        name: str = "conveyor",
        connect_timeout_s: float = 5.0,
    ) -> Bus:
        """Connect to the servers of `settings` (or one URL / a comma-separated seed list),
        failing with BusUnavailable after `connect_timeout_s`; once connected, the client
        reconnects forever (a server restart is an outage, not an exit)."""
        nc, watch = await cls._connect(settings, name, connect_timeout_s)
        bus = cls(nc, topology or Topology(), watch)
        bus._kv_buckets = {}
        bus._object_stores = {}
        return bus
