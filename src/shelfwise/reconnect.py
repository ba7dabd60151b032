"""How long a long-lived connection waits before it reconnects after losing its peer.

The outbox relay (`events/relay.py`) and the live hub's feed (`live/hub.py`) hold one
connection each for hours. When PostgreSQL restarts, every such connection in every
process drops at the same instant; reconnecting each second in lockstep would hit the
server starting up with all of them together, every second, for the whole outage. So the
wait is a capped exponential with "equal jitter" — `d/2 + uniform(0, d/2)` with
`d = min(cap, first * 2**n)` after the n-th failure in a row, the same shape as the job
retries (`jobs/retry.py`): still short at first (a blip costs ~0.5 s), spread out, and at
most `cap` seconds once the outage drags on, so recovery after it ends takes at most `cap`.

A connection that stayed up `healthy_after` seconds before failing counts as a fresh
start: the next wait is short again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class ReconnectBackoff:
    first: float = 0.5
    cap: float = 5.0
    healthy_after: float = 30.0
    rng: random.Random = field(default_factory=random.Random)  # seeded in tests
    failures: int = 0  # in a row, counted by `after`

    def after(self, lasted: float) -> float:
        """The wait before reconnecting, for a connection that failed after `lasted`
        seconds (0 when it could not even be made)."""
        if lasted >= self.healthy_after:
            self.failures = 0
        ceiling = min(self.cap, self.first * 2.0**self.failures)
        self.failures += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)
