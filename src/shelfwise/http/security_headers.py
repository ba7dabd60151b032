"""Security headers on every response (set by the edge layer, `edge.py`).

The API answers JSON, so its policy is the strictest possible (`default-src 'none'`).
HTML pages (the dashboard) get a CSP with a per-request nonce: only the page's own
scripts, marked with that nonce, run — an injected `<script>` does not. `/docs` loads
Swagger UI from its CDN and needs inline bootstrap code; it gets its own, looser policy,
and carries no user data.
"""

from __future__ import annotations

import secrets

from starlette.types import Scope

NONCE_KEY = "csp_nonce"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    "style-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; img-src 'self' data: "
    "https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")


def page_csp(nonce: str) -> str:
    return (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' "
        f"'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def csp_nonce(scope: Scope) -> str:
    nonce: str = scope.setdefault("state", {}).setdefault(NONCE_KEY, secrets.token_urlsafe(16))
    return nonce


# Every response gets these unless it set its own (the CSP depends on the response).
STATIC_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
)
HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")


def csp_for(scope: Scope, content_type: str) -> str:
    """The Content-Security-Policy for a response of `content_type` to this request."""
    if scope["path"].startswith(DOCS_PATHS):
        return DOCS_CSP
    if content_type.startswith("text/html"):
        return page_csp(csp_nonce(scope))
    return API_CSP
