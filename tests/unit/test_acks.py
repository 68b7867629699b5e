"""`settle(outcome)`: the one decision table for acking, nakking or terminating a delivery."""

import pytest

from events.acks import Ack, Nak, Outcome, Term, settle


@pytest.mark.parametrize(
    ("outcome", "decision"),
    [
        (Outcome.DONE, Ack()),
        (Outcome.PARKED, Ack()),  # a copy with the reason is on the DLQ: never redeliver
        (Outcome.GAVE_UP, Term()),
        (Outcome.SHUTDOWN, Nak(None)),  # another consumer takes it at once
        (Outcome.TRANSIENT, Nak(0.5)),
    ],
)
def test_decision_table(outcome, decision):
    assert settle(outcome) == decision


@pytest.mark.parametrize(
    "outcome", [Outcome.DONE, Outcome.PARKED, Outcome.GAVE_UP, Outcome.SHUTDOWN]
)
@pytest.mark.parametrize("num_delivered", [1, 2, 5, 50])
def test_only_transient_failures_depend_on_the_delivery_count(outcome, num_delivered):
    assert settle(outcome, num_delivered) == settle(outcome, 1)


@pytest.mark.parametrize(
    ("num_delivered", "delay"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 16.0), (7, 30.0), (10, 30.0)],
)
def test_transient_failures_back_off_exponentially_up_to_a_cap(num_delivered, delay):
    assert settle(Outcome.TRANSIENT, num_delivered) == Nak(delay)


def test_transient_backoff_never_decreases_and_survives_huge_delivery_counts():
    delays = [settle(Outcome.TRANSIENT, n) for n in range(1, 2000)]
    assert all(isinstance(d, Nak) and d.delay_s is not None for d in delays)
    values = [d.delay_s for d in delays if isinstance(d, Nak)]
    assert values == sorted(values)
    assert values[-1] == 30.0


def test_every_outcome_has_a_decision():
    for outcome in Outcome:
        assert isinstance(settle(outcome), Ack | Nak | Term)


def test_decisions_are_values():
    assert Nak(2.0) == Nak(2.0) and Nak(2.0) != Nak(None)
    assert Ack() == Ack() and Ack() != Term()
    assert len({Ack(), Ack(), Term()}) == 2  # frozen, hashable
