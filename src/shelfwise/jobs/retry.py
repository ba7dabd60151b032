"""Retry policy for jobs: exponential backoff with jitter, a bounded number of tries.

`delay = d/2 + uniform(0, d/2)` where `d = min(cap, base * 2**attempt)` ("equal jitter"):
the wait still doubles per attempt, so a struggling dependency gets room, but jobs that
failed together do not all come back in the same second. The clock and the random
source are injected, so a test can compute the exact `scheduled_at` instead of waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from procrastinate import BaseRetryStrategy, RetryDecision
from procrastinate.jobs import Job

from shelfwise.clock import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class Backoff:
    """Per-task policy: `attempts` tries in total, then the job is dead-lettered."""

    attempts: int = 5
    base_seconds: float = 2.0
    cap_seconds: float = 600.0

    def ceiling(self, attempt: int) -> float:
        """The un-jittered wait after the `attempt`-th failure (0-based)."""
        return float(min(self.cap_seconds, self.base_seconds * 2**attempt))


class JitteredBackoff(BaseRetryStrategy):
    def __init__(
        self, policy: Backoff, *, clock: Clock | None = None, rng: random.Random | None = None
    ) -> None:
        self.policy = policy
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not security)

    def will_retry(self, attempts_so_far: int) -> bool:
        """Whether a failure of a job that already failed `attempts_so_far` times is retried."""
        return attempts_so_far + 1 < self.policy.attempts

    def delay_seconds(self, attempts_so_far: int) -> float:
        ceiling = self.policy.ceiling(attempts_so_far)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if not self.will_retry(job.attempts):
            return None  # Procrastinate marks the job 'failed': the dead letter
        delay = timedelta(seconds=self.delay_seconds(job.attempts))
        return RetryDecision(retry_at=self._clock.now() + delay)
