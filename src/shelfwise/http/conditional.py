"""ETags and conditional requests (RFC 9110 §13).

A resource's ETag is its row version. `If-None-Match` lets readers revalidate cheaply
(304); `If-Match` makes updates optimistic: missing → 428, stale → 412.
"""

from __future__ import annotations

import re

from fastapi import Request

from shelfwise.errors import PreconditionRequired, VersionMismatch

_ETAG = re.compile(r'^(?:W/)?"v(\d{1,18})"$')


def etag_for(version: int) -> str:
    return f'"v{version}"'


def _listed(header: str) -> list[str]:
    return [part.strip() for part in header.split(",") if part.strip()]


def is_not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    weak_form = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == weak_form for tag in _listed(header))


def expected_version(request: Request) -> int:
    """The version the client last saw, from `If-Match`; raises 428/412 otherwise."""
    header = request.headers.get("if-match")
    if not header:
        raise PreconditionRequired("Send If-Match with the ETag from your last read")
    for tag in _listed(header):
        match = _ETAG.match(tag)
        if match and not tag.startswith("W/"):  # If-Match uses strong comparison
            return int(match.group(1))
    raise VersionMismatch("If-Match does not match the current ETag")
