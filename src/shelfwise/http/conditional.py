"""ETags and conditional requests (RFC 9110 §13).

A resource's ETag is its row version. `If-None-Match` lets readers revalidate cheaply
(304); `If-Match` makes updates optimistic: missing → 428, stale or unusable → 412 (404 first
when the resource is gone), `*` → any.
"""

from __future__ import annotations

import re

from fastapi import Request

from shelfwise.errors import PreconditionRequired

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


ANY_VERSION = None
# What a tag list with no usable strong tag (weak, garbage) expects: a version no row
# has. The write then fails as it should, and the service tells 404 (no such resource,
# which RFC 9110 §13.2.2 evaluates first) from 412 (it changed) the same way as for a
# stale tag.
NO_VERSION = -1


def expected_version(request: Request) -> int | None:
    """The version the client last saw, from `If-Match`; 428 without the header.

    `If-Match: *` matches any current representation (RFC 9110 §13.1.1): the answer is
    `ANY_VERSION` (None), and the update applies to whatever version exists. A client
    that wants lost-update protection sends the ETag it read."""
    header = request.headers.get("if-match")
    if not header:
        raise PreconditionRequired("Send If-Match with the ETag from your last read")
    tags = _listed(header)
    if "*" in tags:
        return ANY_VERSION
    for tag in tags:
        match = _ETAG.match(tag)
        if match and not tag.startswith("W/"):  # If-Match uses strong comparison
            return int(match.group(1))
    return NO_VERSION
