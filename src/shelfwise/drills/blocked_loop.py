"""blocked-loop: a blocking call inside `async def` stalls every request on the process."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.system import DrillSystem


async def nightly_price_report_blocking(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 the bug on purpose: a synchronous call on the loop


async def nightly_price_report_fixed(seconds: float) -> None:
    await asyncio.to_thread(time.sleep, seconds)  # the fix: off the loop


async def _healthz_latency_during(system: DrillSystem, report: float, *, fixed: bool) -> float:
    """The worst wait of a `GET /healthz` issued every 20 ms while the report runs beside
    it: from when the request was due to when its answer came back."""
    stop = asyncio.Event()
    async with system.client() as client:

        async def probe() -> float:
            worst = 0.0
            while not stop.is_set():
                due = time.perf_counter() + 0.02
                await asyncio.sleep(0.02)
                await client.get("/healthz")
                worst = max(worst, time.perf_counter() - due)
            return worst

        probing = asyncio.create_task(probe())
        await asyncio.sleep(0.1)  # a few probes before the report: the baseline
        work = nightly_price_report_fixed if fixed else nightly_price_report_blocking
        await work(report)
        await asyncio.sleep(0.1)
        stop.set()
        return await probing


async def run(system: DrillSystem, quick: bool) -> Outcome:
    report = 0.5 if quick else 2.0
    before = metric("shelfwise_event_loop_blocked_total")
    with capture_logs() as logs:
        blocked_latency = await _healthz_latency_during(system, report, fixed=False)
    fixed_latency = await _healthz_latency_during(system, report, fixed=True)
    stalls = [e for e in logs if e["event"] == "event_loop_blocked"]
    moved = metric("shelfwise_event_loop_blocked_total") - before
    return Outcome(
        signal="event_loop_blocked",
        seen=moved >= 1
        and any("nightly_price_report_blocking" in e["blocking"] for e in stalls)
        and blocked_latency > fixed_latency,
        evidence={
            "shelfwise_event_loop_blocked_total (delta)": moved,
            "event_loop_blocked.blocking": stalls[0]["blocking"] if stalls else None,
            "worst GET /healthz wait beside the blocking report (s)": round(blocked_latency, 3),
            "worst GET /healthz wait beside the fixed report (s)": round(fixed_latency, 3),
        },
        look_at=[
            "histogram shelfwise_event_loop_lag_seconds (p99 jumps on every route at once)",
            "counter shelfwise_event_loop_blocked_total",
            "log event_loop_blocked: `blocking` and `stack` name the code",
            "GET /v1/admin/debug/profile?seconds=5 while it happens",
        ],
        fix="move blocking or CPU-bound work off the loop: `await asyncio.to_thread(...)`, "
        "an async driver, or a job on the worker",
    )


DRILL = Drill("blocked-loop", "time.sleep inside async def stalls unrelated requests", run)
