"""CSRF defence for cookie-authenticated requests.

Two independent checks on every unsafe (non-GET/HEAD/OPTIONS) request that is
authenticated by the session cookie; Bearer-token requests are not affected, since a
browser never attaches those by itself:

1. A token bound to the session: `X-CSRF-Token` must equal HMAC(session_secret, session
   id). Another site cannot read it (same-origin policy), so it cannot send it.
2. Provenance: `Origin` must be this site or a configured CORS origin; without `Origin`,
   `Sec-Fetch-Site` must be `same-origin`. A request that shows neither is refused.

The session cookie is also `SameSite=Lax`, a third layer for browsers that honour it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterable

import structlog
from starlette.requests import Request

from shelfwise.errors import PermissionDenied
from shelfwise.observability.metrics import SECURITY_EVENTS

log = structlog.get_logger("shelfwise.identity.csrf")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEADER = "X-CSRF-Token"


class CsrfFailed(PermissionDenied):
    code = "csrf_failed"
    title = "Cross-site request refused"


def csrf_token(secret: bytes, session_id: uuid.UUID) -> str:
    digest = hmac.new(secret, b"csrf:" + session_id.bytes, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _origin_of(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def check_csrf(
    request: Request, *, secret: bytes, session_id: uuid.UUID, trusted_origins: Iterable[str]
) -> None:
    if request.method in SAFE_METHODS:
        return
    reason = None
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site")
    if origin is not None:
        if origin != _origin_of(request) and origin not in set(trusted_origins):
            reason = "origin_mismatch"
    elif fetch_site != "same-origin":
        reason = "no_provenance"
    presented = request.headers.get(HEADER, "")
    if reason is None and not hmac.compare_digest(presented, csrf_token(secret, session_id)):
        reason = "token_mismatch"
    if reason is not None:
        SECURITY_EVENTS.labels(f"csrf_{reason}").inc()
        log.warning("security_csrf_refused", reason=reason, path=request.url.path)
        raise CsrfFailed("Send the X-CSRF-Token header from a same-origin page")
