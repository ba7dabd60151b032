"""Products. Reads are public catalog data (cacheable); writes need `catalog:write`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from shelfwise.catalog import service
from shelfwise.catalog.cache import CachedResponse
from shelfwise.catalog.schemas import ProductIn, ProductOut, ProductPatch, ProductSort
from shelfwise.context import AppContext
from shelfwise.http.conditional import etag_for, expected_version, is_not_modified
from shelfwise.http.deps import ContextDep, SessionDep
from shelfwise.http.pagination import CursorParam, LimitParam, Page, page_request, page_response
from shelfwise.http.routes import PathParamsRoute
from shelfwise.identity.dependencies import CatalogWriter
from shelfwise.types import Category, Text
from shelfwise.uploads import service as images
from shelfwise.uploads.storage import ImageStore

router = APIRouter(prefix="/v1/products", tags=["products"])


async def get_product(product_id: uuid.UUID, request: Request) -> Response:
    """Served from the product cache; `If-None-Match` with the current ETag gives 304.

    The context is read from the app, not through `ContextDep`: a public cached read has
    no dependency to solve, and FastAPI's solving was a visible share of a hit's CPU."""
    ctx: AppContext = request.app.state.ctx

    async def load() -> CachedResponse:
        row = await service.read_product(ctx.driver, product_id)
        return CachedResponse.of(ProductOut.model_validate(row), etag=etag_for(row["version"]))

    cached = await ctx.catalog_cache.products.get(product_id, load)
    assert cached is not None
    assert cached.etag is not None
    status_code = status.HTTP_304_NOT_MODIFIED if is_not_modified(request, cached.etag) else 200
    return cached.response(ctx.settings.catalog_cache_max_age, status_code=status_code)


# First of the router's routes: the router tries them in order on every request (twice:
# to pick the router, then the route), and the cached read is the hottest path; its path
# overlaps none of the others, so no request matches differently. `PathParamsRoute`: its
# id is validated without FastAPI's per-request dependency solving (`http/routes.py`).
router.add_api_route(
    "/{product_id}",
    get_product,
    methods=["GET"],
    response_model=ProductOut,
    responses={304: {"description": "Not modified"}},
    route_class_override=PathParamsRoute,
)


@router.get("", response_model=Page[ProductOut])
async def list_products(
    request: Request,
    ctx: ContextDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
    sort: ProductSort = ProductSort.CREATED,
    q: Annotated[Text | None, Query(max_length=200, description="Words (prefix match)")] = None,
    category: Annotated[Category | None, Query()] = None,
) -> Response:
    """Served from the page cache (evicted by any product change; 5 s at most)."""
    settings, cursors = ctx.settings, ctx.cursors
    scope = f"products:{sort.value}:{q or ''}:{category or ''}"
    page = page_request(
        cursors,
        scope,
        limit,
        cursor,
        default=settings.page_limit_default,
        cap=settings.page_limit_max,
    )

    async def load() -> CachedResponse:
        async with ctx.db.sessions() as session:
            result = await service.list_products(
                session, page=page, sort=sort, q=q, category=category
            )
        headers = Response()
        items, next_cursor = page_response(request, headers, cursors, scope, result)
        body: Page[ProductOut] = Page(
            data=[ProductOut.model_validate(p) for p in items],
            next_cursor=next_cursor,
            has_more=result.has_more,
        )
        link = headers.headers.get("link")
        return CachedResponse.of(body, headers={"Link": link} if link else {})

    cached = await ctx.catalog_cache.pages.get(str(request.url), load)
    assert cached is not None
    return cached.response(settings.catalog_cache_max_age)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductIn,
    _: CatalogWriter,
    session: SessionDep,
    ctx: ContextDep,
    request: Request,
    response: Response,
) -> ProductOut:
    product = await service.create_product(session, **body.model_dump())
    ctx.catalog_cache.product_changed(product.id)
    response.headers["Location"] = str(request.url_for("get_product", product_id=product.id))
    response.headers["ETag"] = etag_for(product.version)
    return ProductOut.model_validate(product)


IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "schema": {"type": "string", "minLength": 1},
    "description": 'The ETag of your last read (`"v3"`), or `*` for any current version '
    "(RFC 9110). A stale, weak or unusable tag is 412.",
}


@router.patch(
    "/{product_id}",
    responses={412: {}, 428: {}},
    openapi_extra={"parameters": [{**IF_MATCH, "required": True}]},
)
async def update_product(
    product_id: uuid.UUID,
    body: ProductPatch,
    _: CatalogWriter,
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    response: Response,
) -> ProductOut:
    version = expected_version(request)
    product = await service.update_product(
        session, product_id, expected_version=version, changes=body.changes()
    )
    ctx.catalog_cache.product_changed(product_id)  # read-your-writes in this process
    response.headers["ETag"] = etag_for(product.version)
    return ProductOut.model_validate(product)


@router.delete(
    "/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={412: {}},
    openapi_extra={"parameters": [{**IF_MATCH, "required": False}]},
)
async def delete_product(
    product_id: uuid.UUID,
    _: CatalogWriter,
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
) -> None:
    version = expected_version(request) if request.headers.get("if-match") else None
    image = await service.delete_product(session, product_id, expected_version=version)
    ctx.catalog_cache.product_changed(product_id)
    if image is not None:  # after the commit: a rollback would have needed the file
        await images.release_quietly(session, ImageStore(ctx.settings.data_dir / "images"), image)
