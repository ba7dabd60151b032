"""Graceful shutdown for long-lived connections.

uvicorn closes idle connections on SIGTERM but waits for open responses — and an event
stream never finishes by itself: without a drain, streams were cut when the 10 s graceful
timeout ran out (SSE clients saw a broken chunked body, not a reconnect hint). The app's
lifespan chains `drain_on_signals()` in front of uvicorn's own SIGTERM/SIGINT handler:
the signal calls `request_drain()`, every hub then tells its clients to reconnect
elsewhere and ends their streams, and uvicorn's shutdown goes on as before, in seconds.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

_callbacks: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []


def on_drain(callback: Callable[[], None]) -> Callable[[], None]:
    """Register; returns the function that unregisters."""
    entry = (asyncio.get_running_loop(), callback)
    _callbacks.append(entry)
    return lambda: _callbacks.remove(entry) if entry in _callbacks else None


def request_drain() -> None:
    """Safe from a signal handler or another thread."""
    for loop, callback in list(_callbacks):
        if not loop.is_closed():
            loop.call_soon_threadsafe(callback)


def drain_on_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> Callable[[], None]:
    """Call `request_drain()` first, then the handler already installed (uvicorn's, which
    starts its graceful shutdown). Returns the function that puts the previous handlers
    back. Only the main thread may set handlers: elsewhere (a server in a thread) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum: int, frame: FrameType | None) -> None:
        request_drain()
        chained = previous[signal.Signals(signum)]
        if callable(chained):
            chained(signum, frame)
        elif chained != signal.SIG_IGN:  # the default action: put it back and re-raise
            signal.signal(signum, chained)
            signal.raise_signal(signum)

    for sig in signals:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, chained in previous.items():
            if signal.getsignal(sig) is handler:  # uvicorn may have restored its own already
                signal.signal(sig, chained)

    return restore
