"""Reconnect waits: short at first, doubling to a cap, jittered, reset after a healthy run."""

from __future__ import annotations

import random

from shelfwise.reconnect import ReconnectBackoff


def test_waits_double_up_to_the_cap_within_the_jitter_band() -> None:
    backoff = ReconnectBackoff(first=0.5, cap=5.0, rng=random.Random(7))
    waits = [backoff.after(0.0) for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_processes_that_failed_together_do_not_retry_in_lockstep() -> None:
    first_waits = {ReconnectBackoff(rng=random.Random(seed)).after(0.0) for seed in range(20)}
    assert len(first_waits) == 20


def test_a_connection_that_stayed_up_starts_over_with_a_short_wait() -> None:
    backoff = ReconnectBackoff(first=0.5, cap=5.0, healthy_after=30.0, rng=random.Random(1))
    for _ in range(5):
        backoff.after(0.0)
    assert backoff.after(1.0) >= 2.5  # failed again soon after reconnecting: still backing off
    assert backoff.after(3600.0) <= 0.5  # up for an hour: a blip, reconnect at once
