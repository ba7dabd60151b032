"""Event-loop lag, and a watchdog that names the code blocking the loop.

A coroutine on the loop sleeps `sample_seconds` over and over; how late it wakes is the
loop's lag (`shelfwise_event_loop_lag_seconds`), and each wake-up is a heartbeat. A
*thread* — which keeps running while the loop is stuck — checks the heartbeat; when it
is older than `blocked_after`, it reads the loop thread's current frame
(`sys._current_frames()`) and logs `event_loop_blocked` with that stack — at the
threshold, then each time the stall doubles.
The innermost frames are the blocking code itself: a `time.sleep`, a CPU-bound loop,
a synchronous driver call inside `async def`.

A blocking call that holds the GIL without releasing it (a long C call) also stalls the
watchdog thread; it then reports when the call returns, with the stack of whatever runs
next. Pure-Python CPU work and blocking I/O both release the GIL and are caught live.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import traceback

import structlog

from shelfwise.config import Settings
from shelfwise.observability.metrics import LOOP_BLOCKED, LOOP_LAG

log = structlog.get_logger("shelfwise.loop")
STACK_LIMIT = 40


class LoopWatch:
    """Samples the running loop's lag and watches it from a thread; `start` on the loop."""

    def __init__(self, *, sample_seconds: float, blocked_after: float) -> None:
        self.sample_seconds = sample_seconds
        self.blocked_after = blocked_after
        self._beat = time.monotonic()
        self._sampler: asyncio.Task[None] | None = None
        self._watchdog: threading.Thread | None = None
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> LoopWatch:
        return cls(
            sample_seconds=settings.loop_lag_sample_seconds,
            blocked_after=settings.loop_blocked_threshold_seconds,
        )

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._sampler = asyncio.create_task(self._sample(), name="loop-lag-sampler")
        self._watchdog = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._watchdog.start()

    async def stop(self) -> None:
        self._stopped.set()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._watchdog is not None:
            # The thread wakes at least every check interval; joining off the loop
            # keeps a slow wake-up from stalling shutdown.
            await asyncio.to_thread(self._watchdog.join, 5.0)

    async def __aenter__(self) -> LoopWatch:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _sample(self) -> None:
        while True:
            due = time.monotonic() + self.sample_seconds
            await asyncio.sleep(self.sample_seconds)
            now = time.monotonic()
            LOOP_LAG.observe(max(0.0, now - due))
            self._beat = now

    def _watch(self) -> None:
        check_every = min(self.blocked_after / 4, 0.25)
        stall_beat: float | None = None
        next_report = self.blocked_after
        while not self._stopped.wait(check_every):
            beat = self._beat
            stalled = time.monotonic() - beat - self.sample_seconds
            if beat != stall_beat:  # a new heartbeat: any earlier stall is over
                stall_beat, next_report = beat, self.blocked_after
            if stalled < next_report:
                continue
            # Reported at the threshold, then each time the stall doubles: a long stall
            # is seen again with its stack by then, and the log stays bounded (log2).
            next_report = stalled * 2
            self._report(stalled)

    def _report(self, stalled: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:  # the loop's thread is gone: nothing left to watch
            return
        summary = traceback.extract_stack(frame, limit=STACK_LIMIT)
        innermost = summary[-1] if summary else None
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        LOOP_BLOCKED.inc()
        log.warning(
            "event_loop_blocked",
            blocked_ms=round(stalled * 1000),
            threshold_ms=round(self.blocked_after * 1000),
            blocking=(
                f"{innermost.name} ({innermost.filename}:{innermost.lineno})" if innermost else None
            ),
            task=task.get_name() if task is not None else None,
            stack="".join(summary.format()),
        )
