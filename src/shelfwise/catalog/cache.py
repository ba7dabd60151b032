"""Caches for public catalog reads: one product by id, and pages of the product list.

Entries are whole serialized responses. A product event evicts that product and every
list page (a change can move a product between pages, filters and sort positions).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pydantic import BaseModel
from starlette.responses import Response

from shelfwise.cache import ReadThroughCache
from shelfwise.events.outbox import PublishedEvent


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A response as it leaves the router: body bytes, ETag, and its encoded headers.

    The header list for each (max-age, status) is built on the first hit and reused:
    a hit then costs no pydantic, no JSON and no header encoding (issue 14's profile)."""

    body: bytes
    etag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    _raw: dict[tuple[int, int], list[tuple[bytes, bytes]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(
        cls, model: BaseModel, *, etag: str | None = None, headers: dict[str, str] | None = None
    ) -> CachedResponse:
        return cls(model.model_dump_json().encode(), etag, headers or {})

    def response(self, max_age: int, *, status_code: int = 200) -> Response:
        """A fresh response (middleware appends to its header list) from the prepared one."""
        raw = self._raw.get((max_age, status_code))
        if raw is None:
            raw = self._raw[max_age, status_code] = self._render(max_age, status_code).raw_headers
        return _Prepared(self.body if status_code == 200 else b"", status_code, list(raw))

    def _render(self, max_age: int, status_code: int) -> Response:
        headers = {
            **self.headers,
            "Cache-Control": f"public, max-age={max_age}",
            "Vary": "Accept-Encoding",
        }
        if self.etag:
            headers["ETag"] = self.etag
        body = self.body if status_code == 200 else b""
        return Response(body, status_code, headers, media_type="application/json")


class _Prepared(Response):
    """A `Response` whose headers were encoded once, when its entry was first served."""

    media_type = "application/json"

    def __init__(
        self, body: bytes, status_code: int, raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = raw_headers


class CatalogCache:
    def __init__(
        self,
        *,
        max_products: int = 10_000,
        # The TTL is the safety net (product events evict): 300 s as decision 0012 says.
        # At 30 s, 10,000 cached products cost >= 333 reloads/s on the pool that also
        # places orders, and entries loaded together expired together (issue 14).
        product_ttl: float = 300.0,
        max_pages: int = 2_000,
        page_ttl: float = 5.0,
        refresh_ahead: bool = True,
    ) -> None:
        # Refreshed ahead from half the ttl on (cache.py): entries warmed together must
        # not expire together and send a wave of misses to the pool (issue 14's read tail).
        self.products: ReadThroughCache[uuid.UUID, CachedResponse] = ReadThroughCache(
            "product",
            max_entries=max_products,
            ttl=product_ttl,
            refresh_after=product_ttl / 2 if refresh_ahead else None,
        )
        self.pages: ReadThroughCache[str, CachedResponse] = ReadThroughCache(
            "product_page",
            max_entries=max_pages,
            ttl=page_ttl,
            refresh_after=page_ttl / 2 if refresh_ahead else None,
        )

    def product_changed(self, product_id: uuid.UUID) -> None:
        self.products.invalidate(product_id)
        self.pages.invalidate_all()

    def on_event(self, event: PublishedEvent) -> None:
        """Hub listener: evict what a committed product change made stale, in every
        process, whichever instance made the change."""
        if event.type.startswith("product."):
            try:
                self.product_changed(uuid.UUID(str(event.payload.get("product_id"))))
            except ValueError:
                self.products.invalidate_all()
                self.pages.invalidate_all()
