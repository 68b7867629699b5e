"""What `conveyor status` and `conveyor flow` say of flow control, in words (core.status)."""

from __future__ import annotations

from orchestrator.core.rules import iso_utc
from orchestrator.core.status import flow_text, waiting_text

DUE = 1_796_150_000.0


def test_a_rate_limited_wait_says_its_place_and_when_the_next_token_frees() -> None:
    wait = {"reason": "rate", "scope": "rate", "limit": 10, "per_s": 1.0, "key": "k1"}
    wait |= {"position": 3, "holding": 10, "until": DUE}
    assert waiting_text(wait) == (
        f"rate-limited to 10 per 1s (key k1): #3 in line, 10 holding, next token at {iso_utc(DUE)}"
    )


def test_a_limiter_and_a_collector_in_words() -> None:
    rate = {"kind": "limiter", "scope": "rate", "name": "push", "key": "k1", "limit": 5}
    rate |= {"per_s": 60.0, "holding": 5, "waiting": 2, "timer_due": DUE}
    assert flow_text(rate) == (
        f"rate 5 per 60s of push (key k1): 5 in the window, 2 queued, next token at {iso_utc(DUE)}"
    )
    task = {"kind": "limiter", "scope": "task", "name": "charge", "key": "", "limit": 1}
    task |= {"per_s": None, "holding": 1, "waiting": 0, "timer_due": None}
    assert flow_text(task) == "task concurrency 1 of charge: 1 holding, 0 queued"
    debounce = {"kind": "collector", "workflow": "settle", "mode": "debounce", "key": "s1"}
    debounce |= {"count": 1, "timer_due": DUE}
    assert flow_text(debounce) == (
        f"debounce of settle (key s1): 1 event held, starts a run at {iso_utc(DUE)}"
    )
