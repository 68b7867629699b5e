"""The one place that decides what happens to a message we were handed: `settle(outcome)`."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    DONE = "done"  # handled: applied, or its result durably published
    PARKED = "parked"  # could not be handled; a copy with the reason is on the DLQ
    GAVE_UP = "gave-up"  # a final failure was published for it; never deliver it again
    SHUTDOWN = "shutdown"  # we are stopping: hand it to another consumer at once
    TRANSIENT = "transient"  # a dependency failed (store, broker): try again later


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class Nak:
    delay_s: float | None = None


@dataclass(frozen=True, slots=True)
class Term:
    pass


Decision = Ack | Nak | Term

_MAX_TRANSIENT_DELAY_S = 30.0


def settle(outcome: Outcome, num_delivered: int = 1) -> Decision:
    """Ack, nak (with a delay) or terminate a delivery, given what became of it."""
    if outcome in (Outcome.DONE, Outcome.PARKED):
        return Ack()
    if outcome is Outcome.GAVE_UP:
        return Term()
    if outcome is Outcome.SHUTDOWN:
        return Nak(None)
    # Exponential backoff on repeated transient failures, so a sick dependency is not hammered.
    # The exponent is clamped: 0.5 * 2**n overflows a float past ~1,000 deliveries.
    exponent = min(max(0, num_delivered - 1), 16)
    return Nak(min(_MAX_TRANSIENT_DELAY_S, 0.5 * 2**exponent))
