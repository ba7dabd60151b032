"""Opaque, tamper-evident cursors and the list envelope.

A cursor is `base64url(json) + "." + base64url(hmac)`. Clients cannot forge one to reach
rows they were not shown, and a cursor minted for one sort order is refused for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Query, Request, Response
from pydantic import BaseModel

from shelfwise.errors import InvalidCursor
from shelfwise.pagination import PageRequest, PageResult

T = TypeVar("T")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]

    def encode(self, scope: str, key: tuple[str, ...]) -> str:
        payload = json.dumps([scope, *key], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def decode(self, scope: str, cursor: str) -> tuple[str, ...]:
        try:
            body, signature = cursor.split(".", 1)
            payload = _unb64(body)
            valid = hmac.compare_digest(_unb64(signature), self._sign(payload))
            parts = json.loads(payload) if valid else None
        except (ValueError, binascii.Error):
            parts = None
        if not isinstance(parts, list) or not parts or parts[0] != scope:
            raise InvalidCursor("The cursor is malformed, tampered with, or from another list")
        if not all(isinstance(part, str) for part in parts[1:]):
            raise InvalidCursor("The cursor is malformed")
        return tuple(parts[1:])


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None
    has_more: bool


LimitParam = Annotated[int | None, Query(ge=1, description="Page size (capped by the server).")]
# What `CursorCodec.encode` writes: base64url payload, a dot, base64url signature.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
CursorParam = Annotated[
    str | None,
    Query(
        max_length=2048,
        # Documented, not enforced here: the codec refuses anything it did not issue with
        # one answer (422 `invalid_cursor`), whether or not it has the right shape.
        json_schema_extra={"pattern": CURSOR_PATTERN},
        description="Opaque cursor from `next_cursor` (a tampered or foreign one is 422).",
    ),
]


def page_request(
    codec: CursorCodec, scope: str, limit: int | None, cursor: str | None, *, default: int, cap: int
) -> PageRequest:
    effective = min(limit or default, cap)
    # `cursor=` (empty) is a cursor the codec did not issue, not "the first page".
    after = codec.decode(scope, cursor) if cursor is not None else None
    return PageRequest(limit=effective, after=after)


def page_response(
    request: Request, response: Response, codec: CursorCodec, scope: str, result: PageResult[T]
) -> tuple[list[T], str | None]:
    """Returns the items and next cursor; sets the `Link: rel="next"` header."""
    next_cursor = codec.encode(scope, result.last_key) if result.last_key else None
    if next_cursor:
        url = request.url.include_query_params(cursor=next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return result.items, next_cursor


OutT = TypeVar("OutT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Paging:
    """What every list route needs to page: the codec and the server's limits."""

    codec: CursorCodec
    default_limit: int
    max_limit: int


async def paged(
    request: Request,
    response: Response,
    paging: Paging,
    scope: str,
    limit: int | None,
    cursor: str | None,
    fetch: Callable[[PageRequest], Awaitable[PageResult[T]]],
    out: Callable[[T], OutT],
) -> Page[OutT]:
    """The whole list protocol in one place: decode and cap, fetch, encode the next
    cursor, set `Link` and a private `Cache-Control`."""
    page = page_request(
        paging.codec, scope, limit, cursor, default=paging.default_limit, cap=paging.max_limit
    )
    result = await fetch(page)
    items, next_cursor = page_response(request, response, paging.codec, scope, result)
    response.headers.setdefault("Cache-Control", "private, no-store")
    return Page(
        data=[out(item) for item in items], next_cursor=next_cursor, has_more=result.has_more
    )
