"""Two classic flaky tests and their fixed versions — the flaky-test drill runs them.

Not part of the suite (pytest collects only `tests/`). By hand,
`.venv/bin/pytest src/shelfwise/drills/sandbox -p no:cacheprovider` runs them in file order:
the timing test fails about every other run; `shelfwise drill flaky-test` also shuffles the
order with a seed (as `-n 2` or a random-order plugin would), which shows the shared state.

1. Shared state: the cart is a module global, so a test passes or fails depending on
   which test ran before it (order changes with -n, -k, random ordering).
2. Timing: the test sleeps a fixed time and hopes the background restock finished;
   on a busy machine it sometimes has not. The fix waits on the condition, with a deadline.
"""

from __future__ import annotations

import random
import threading
import time

# Timing of the background work; the drill reseeds it per run.
RESTOCK_MAX_SECONDS = 0.02
SLEEP_SECONDS = 0.01  # what the flaky test hopes is "long enough"
rng = random.Random()  # noqa: S311 (test timing, not a secret)

CART: list[str] = []  # bug 1: state shared by every test in the process


def reseed(seed: int) -> None:
    rng.seed(seed)
    CART.clear()  # each drill run is a fresh process's worth of state


class Restock:
    """Background work that finishes after a random delay (a thread, a job, a server)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._timer = threading.Timer(rng.uniform(0, RESTOCK_MAX_SECONDS), self.done.set)

    def start(self) -> Restock:
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()


def test_cart_starts_empty() -> None:
    assert CART == []


def test_adding_a_mug() -> None:
    CART.append("mug")
    assert CART == ["mug"]


def test_restock_is_visible() -> None:
    restock = Restock().start()
    try:
        time.sleep(SLEEP_SECONDS)  # bug 2: a sleep instead of waiting on the condition
        assert restock.done.is_set()
    finally:
        restock.stop()


def test_cart_starts_empty_fixed() -> None:
    cart: list[str] = []  # the fix: each test builds its own state (a fixture)
    assert cart == []


def test_adding_a_mug_fixed() -> None:
    cart: list[str] = []
    cart.append("mug")
    assert cart == ["mug"]


def test_restock_is_visible_fixed() -> None:
    restock = Restock().start()
    try:
        # The fix: wait for the condition itself, bounded by a generous deadline.
        assert restock.done.wait(timeout=5.0)
    finally:
        restock.stop()


FLAKY = (test_cart_starts_empty, test_adding_a_mug, test_restock_is_visible)
FIXED = (test_cart_starts_empty_fixed, test_adding_a_mug_fixed, test_restock_is_visible_fixed)
