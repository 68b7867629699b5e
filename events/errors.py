"""Errors of the contract layer.

    ConveyorError                      root of every error Conveyor raises on purpose
    ├── MalformedEvent                 bytes off the bus (or HTTP) that are not a valid CloudEvent,
    │                                  or whose data does not fit the model of its type
    ├── BusError                       the broker misbehaved or could not be reached
    │   ├── BusUnavailable             no connection / no stream answered (retry later)
    │   │   └── NoResponders           nothing serves a request subject right now
    │   ├── BusClosed                  the connection is closed for good: end the process
    │   │   └── Deposed                a fence refused a partition owner's write: another
    │   │                              replica owns the partition now (lease mode)
    │   ├── MessageTooLarge            headers + body over the server's max payload (not sent)
    │   ├── BadSubject                 a subject the server would close the connection over
    │   └── TopologyMissing            a stream, bucket or store this process needs is absent
    └── ServerError                    the embedded nats-server could not be started

Foreign exceptions (nats-py, pydantic) are translated here, at the boundary, so callers
never catch a library's exception types.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Root of all errors raised on purpose by Conveyor packages."""


class MalformedEvent(ConveyorError):
    """An event that breaks the wire contract. `reason` says what and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BusError(ConveyorError):
    """The broker refused or failed an operation."""


class BusUnavailable(BusError):
    """The broker (or the stream behind a subject) did not answer in time."""


class NoResponders(BusUnavailable):
    """Nothing serves a request's subject right now (its server restarts, or — in lease mode —
    a replica is taking its partition over)."""


class BusClosed(BusError):
    """The connection to NATS is closed and will not come back (the server closed it, or it
    was closed on purpose): nothing can be retried on it. A process that sees this exits
    non-zero so that its supervisor starts a fresh one."""


class Deposed(BusClosed):
    """A lease-mode partition owner's write was refused by its fence: a successor took the
    partition over (a newer epoch's marker is on the partition's fence subject), so nothing
    this owner publishes into the event stream can land any more. Like a closed connection it
    is never retried: every loop that ends on `BusClosed` ends on it too, and the owner stops
    owning the partition (`orchestrator.runtime.ownership`)."""


class MessageTooLarge(BusError):
    """Headers and body together are over the server's max payload. Refused before sending:
    the server would answer such a message by closing the connection."""


class BadSubject(BusError):
    """A subject NATS cannot carry (whitespace or a control character, an empty token, a
    wildcard to publish to, or too long for the protocol line). Refused before sending: the
    server answers some of these by closing the connection."""


class TopologyMissing(BusError):
    """A stream, bucket or object store this process needs does not exist (yet): the topology
    is created by `conveyor topology apply` (or the orchestrator, on a single node)."""


class ServerError(ConveyorError):
    """The embedded nats-server could not be found, started or stopped."""
