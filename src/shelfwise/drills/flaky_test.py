"""flaky-test: sandbox tests that fail now and then (shared state, a sleep for timing),
run many times with a seed; the fixed versions pass every time."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Sequence

from shelfwise.drills.base import Drill, Outcome
from shelfwise.drills.sandbox import test_cart_flaky as sandbox
from shelfwise.drills.system import DrillSystem

SEED = 20261206


def _runs(tests: Sequence[Callable[[], None]], runs: int, seed: int) -> Counter[str]:
    """Run the tests `runs` times, each time in a seeded random order (as -n or
    random ordering would); count the failures by test name."""
    failures: Counter[str] = Counter()
    for run in range(runs):
        sandbox.reseed(seed + run)
        order = list(tests)
        random.Random(seed + run).shuffle(order)  # noqa: S311 (test order)
        for test in order:
            try:
                test()
            except AssertionError:
                failures[test.__name__] += 1
    return failures


async def run(system: DrillSystem, quick: bool) -> Outcome:
    runs = 20 if quick else 200
    # Threads and sleeps: off the event loop.
    flaky = await asyncio.to_thread(_runs, sandbox.FLAKY, runs, SEED)
    fixed = await asyncio.to_thread(_runs, sandbox.FIXED, runs, SEED)
    return Outcome(
        signal="failure rate over repeated seeded runs",
        seen=sum(flaky.values()) > 0 and sum(fixed.values()) == 0,
        evidence={
            "runs (seed)": f"{runs} ({SEED})",
            **{f"{name} failed": f"{count}/{runs}" for name, count in sorted(flaky.items())},
            "fixed versions failed": f"{sum(fixed.values())}/{runs * len(sandbox.FIXED)}",
        },
        look_at=[
            "the failure only with some orders or under load: run the test alone, "
            "then with its module, then under -n 2",
            "`pytest --count`-style repetition (here: the drill) to measure the rate",
            "module globals and class attributes the test touches; every time.sleep",
        ],
        fix="state per test (fixtures, per-test database), and wait on the condition with a "
        "deadline (tests.support.wait_until) instead of sleeping",
    )


DRILL = Drill("flaky-test", "shared state and a sleep make sandbox tests fail sometimes", run)
