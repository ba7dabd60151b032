"""One HTTP attempt: resolve and check the target, POST the signed body, time it.

No redirects are followed (a 3xx is a failure: a redirect could lead anywhere, including
inside the network). Only the first `RESPONSE_CAP` bytes of the answer are read.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import httpx

from shelfwise.webhooks.signing import signature_header
from shelfwise.webhooks.ssrf import Network, UnsafeWebhookTarget, resolve_target

RESPONSE_CAP = 1024
USER_AGENT = "Shelfwise-Webhooks/1"


@cache
def tls_context() -> ssl.SSLContext:
    """Built once per process: loading the CA bundle costs ~20 ms of CPU, which a client
    per attempt would otherwise pay on every delivery. (The client itself stays per
    attempt: a pooled connection to an address could be reused for another host name.)"""
    return httpx.create_ssl_context()


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    response_body: str | None
    # A refused target is not retried: the URL will not become safe by waiting.
    permanent: bool = False


async def send(
    url: str,
    body: bytes,
    *,
    event_id: str,
    event_type: str,
    secrets: Sequence[str],
    timestamp: int,
    allowed: Sequence[Network],
    connect_timeout: float,
    read_timeout: float,
) -> Attempt:
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        target = await resolve_target(url, allowed)
    except UnsafeWebhookTarget as exc:
        return Attempt(False, None, elapsed(), exc.detail, None, permanent=True)
    address = target.addresses[0]
    request_url = httpx.URL(url).copy_with(host=str(address))
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    headers = {
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Shelfwise-Event-Id": event_id,
        "Shelfwise-Event-Type": event_type,
        "Shelfwise-Signature": signature_header(secrets, timestamp, body),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    try:
        async with (
            httpx.AsyncClient(
                follow_redirects=False, timeout=timeout, trust_env=False, verify=tls_context()
            ) as client,
            client.stream(
                "POST", request_url, content=body, headers=headers, extensions=extensions
            ) as response,
        ):
            chunk = b""
            async for part in response.aiter_bytes():
                chunk += part
                if len(chunk) >= RESPONSE_CAP:
                    break
            text = chunk[:RESPONSE_CAP].decode("utf-8", "replace")[:RESPONSE_CAP]
            ok = 200 <= response.status_code < 300
            error = None if ok else f"HTTP {response.status_code}"
            return Attempt(ok, response.status_code, elapsed(), error, text)
    except httpx.TimeoutException as exc:
        return Attempt(False, None, elapsed(), f"timeout: {type(exc).__name__}", None)
    except httpx.HTTPError as exc:
        return Attempt(False, None, elapsed(), f"{type(exc).__name__}: {exc}"[:500], None)
