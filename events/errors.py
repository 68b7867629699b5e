"""Errors of the contract layer.

    ConveyorError                      root of every error Conveyor raises on purpose
    ├── MalformedEvent                 bytes off the bus (or HTTP) that are not a valid CloudEvent,
    │                                  or whose data does not fit the model of its type
    ├── BusError                       the broker misbehaved or could not be reached
    │   └── BusUnavailable             no connection / no stream answered (retry later)
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


class ServerError(ConveyorError):
    """The embedded nats-server could not be found, started or stopped."""
