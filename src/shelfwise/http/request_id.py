"""Request id: taken from `X-Request-ID` when well-formed, else generated.

The edge layer (`edge.py`) picks it, echoes it on every response, binds it into the
logging context for every line logged during the request; every problem+json body
carries it (`request_id_of`).
"""

from __future__ import annotations

import re
import secrets

from starlette.types import Scope

HEADER = "X-Request-ID"
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")


def pick_request_id(incoming: str | None) -> str:
    if incoming and _WELL_FORMED.fullmatch(incoming):
        return incoming
    # 32 random hex digits, as `uuid4().hex` gave, without building a UUID (a quarter
    # of the cost, on every request).
    return secrets.token_hex(16)


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None
