"""Telling a human: an error-level log line always, plus an optional webhook (JSON POST).

The webhook is best effort with a short timeout: an alerting outage must never stall or
fail the worker, so its failures are logged and swallowed.
"""

from __future__ import annotations

from typing import Any

import httpx
import structlog

log = structlog.get_logger("shelfwise.alerts")


class Alerts:
    def __init__(
        self,
        webhook_url: str | None,
        *,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport
    ) -> None:
        self._url = webhook_url
        self._timeout = timeout
        self._transport = transport

    async def raise_alert(self, alert: str, **fields: Any) -> None:
        log.error(alert, alert=True, **fields)
        if not self._url:
            return
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport
            ) as client:
                response = await client.post(self._url, json={"alert": alert, **fields})
                response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("alert_webhook_failed", alert=alert, error=type(exc).__name__)
