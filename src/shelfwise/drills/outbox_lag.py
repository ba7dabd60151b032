"""outbox-lag: the relay is stopped; committed events wait in the outbox, unpublished."""

from __future__ import annotations

import asyncio

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.job_support import refresh_gauges
from shelfwise.drills.outbox_support import emit_product_updates, publish_all, unpublished
from shelfwise.drills.system import DrillSystem


async def run(system: DrillSystem, quick: bool) -> Outcome:
    events = 20 if quick else 500
    published = metric("shelfwise_outbox_events_published_total")
    await publish_all(system)  # start from an empty backlog
    published = metric("shelfwise_outbox_events_published_total")
    # The relay is down (no worker running): events commit and wait.
    await emit_product_updates(system, events)
    await asyncio.sleep(0.5 if quick else 5.0)
    await refresh_gauges(system)  # what every API and worker process reports
    lag = metric("shelfwise_outbox_lag_seconds")
    waiting = await unpublished(system)
    await publish_all(system)  # the relay is back
    await refresh_gauges(system)
    lag_after = metric("shelfwise_outbox_lag_seconds")
    moved = metric("shelfwise_outbox_events_published_total") - published
    return Outcome(
        signal="shelfwise_outbox_lag_seconds",
        seen=lag >= 0.4 and waiting == events and moved == events and lag_after == 0,
        evidence={
            "events committed while the relay was stopped": events,
            "unpublished (position IS NULL)": waiting,
            "shelfwise_outbox_lag_seconds while stopped": round(lag, 2),
            "shelfwise_outbox_events_published_total after restart (delta)": moved,
            "shelfwise_outbox_lag_seconds after restart": lag_after,
        },
        look_at=[
            "gauge shelfwise_outbox_lag_seconds (alert: outbox lag), "
            "rate(shelfwise_outbox_events_published_total) at zero",
            "gauge shelfwise_outbox_relay_active: no process holds the relay's lock",
            "SELECT count(*), min(created_at) FROM outbox_events WHERE position IS NULL",
            "worker logs: relay_active, relay_connection_lost",
        ],
        fix="start (or restart) `shelfwise worker`: the relay resumes from the first "
        "unpublished event, in commit order, with none lost (they were committed)",
    )


DRILL = Drill("outbox-lag", "the relay stops; events wait; a restart publishes them all", run)
