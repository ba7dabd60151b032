"""Graceful shutdown for long-lived connections.

uvicorn closes idle connections on SIGTERM but waits for open responses — and an event
stream never finishes by itself. The server (see `cli._serve`) calls `request_drain()` on
the signal; every hub then tells its clients to reconnect elsewhere and ends their
streams, so the process drains in seconds instead of hitting the shutdown timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
