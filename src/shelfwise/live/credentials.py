"""A live connection's credential, and the per-credential re-check of open connections.

No application context here (`live/auth.py` turns a credential into a principal): the hub
and its subscriptions hold credentials, and the context holds the hub, so this module
must not need the context or the cycle `context -> hub -> auth -> context` comes back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from shelfwise.identity.credentials import Credential as Credential

log = structlog.get_logger("shelfwise.live")


class Revocable(Protocol):
    def close(self, reason: str) -> None: ...


class Reauthorization:
    """Open connections grouped by credential; each credential is checked at most once
    per `interval` (on a `sweep`), and a refused one closes all of its connections with
    reason `revoked`. A connection's credential was checked when it connected, so a new
    credential starts its interval then."""

    def __init__(self, check: Callable[[Credential], Awaitable[bool]], *, interval: float):
        self._check = check
        self.interval = interval
        self._open: dict[Credential, set[Revocable]] = {}
        self._checked_at: dict[Credential, float] = {}

    def watch(self, credential: Credential, connection: Revocable, *, now: float) -> None:
        self._open.setdefault(credential, set()).add(connection)
        self._checked_at.setdefault(credential, now)

    def unwatch(self, credential: Credential, connection: Revocable) -> None:
        connections = self._open.get(credential)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self._open[credential]
                self._checked_at.pop(credential, None)

    async def sweep(self, *, now: float) -> int:
        """Check every credential whose last check is `interval` old; returns how many."""
        due = [c for c, at in self._checked_at.items() if now - at >= self.interval]
        for credential in due:
            try:
                allowed = await self._check(credential)
            except Exception as exc:  # e.g. the database is down: keep them, retry next sweep
                log.warning("live_recheck_failed", error=type(exc).__name__)
                continue
            if allowed:
                if credential in self._checked_at:
                    self._checked_at[credential] = now
                continue
            self._checked_at.pop(credential, None)
            for connection in self._open.pop(credential, set()):
                connection.close("revoked")
        return len(due)
