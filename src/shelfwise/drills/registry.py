"""Every drill by name, in the order `shelfwise drill --list` prints them."""

from __future__ import annotations

from shelfwise.drills import (
    blocked_loop,
    deadlock,
    flaky_test,
    lock_wait,
    lost_update,
    n_plus_one,
    outbox_lag,
    poison_message,
    pool_exhaustion,
    reconnect_storm,
    slow_query,
    stuck_job,
    webhook_receiver_down,
)
from shelfwise.drills.base import Drill

DRILLS: dict[str, Drill] = {
    drill.name: drill
    for drill in (
        blocked_loop.DRILL,
        slow_query.DRILL,
        n_plus_one.DRILL,
        pool_exhaustion.DRILL,
        lock_wait.DRILL,
        deadlock.DRILL,
        lost_update.DRILL,
        reconnect_storm.DRILL,
        stuck_job.DRILL,
        poison_message.DRILL,
        outbox_lag.DRILL,
        webhook_receiver_down.DRILL,
        flaky_test.DRILL,
    )
}
