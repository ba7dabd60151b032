"""The one credential parser, for every transport: HTTP, SSE, long-poll and WebSocket.

A request or connection carries `Authorization: Bearer <JWT or sw_ API key>` or the
`__Host-session` cookie of a browser session; the bearer wins when both are sent. What
the credential is worth is decided in `identity/authenticate.py`; this module only reads
it, and needs no application context (the live hub holds credentials, and the context
holds the hub).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection

SESSION_COOKIE = "__Host-session"


@dataclass(frozen=True, slots=True)
class Credential:
    kind: Literal["bearer", "session"]
    value: str


def credential_of(connection: HTTPConnection) -> Credential | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Credential("bearer", token.strip())
    cookie = connection.cookies.get(SESSION_COOKIE)
    return Credential("session", cookie) if cookie else None
