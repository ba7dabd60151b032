"""Products. Reads are public catalog data (cacheable); writes need `catalog:write`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from shelfwise.catalog import service
from shelfwise.catalog.schemas import ProductIn, ProductOut, ProductPatch, ProductSort
from shelfwise.http.conditional import etag_for, expected_version, is_not_modified
from shelfwise.http.deps import CursorsDep, SessionDep, SettingsDep
from shelfwise.http.pagination import CursorParam, LimitParam, Page, page_request, page_response
from shelfwise.identity.dependencies import CatalogWriter
from shelfwise.types import Category, Text

router = APIRouter(prefix="/v1/products", tags=["products"])


def _public_cache(response: Response, max_age: int) -> None:
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.headers["Vary"] = "Accept-Encoding"


@router.get("")
async def list_products(
    request: Request,
    response: Response,
    session: SessionDep,
    cursors: CursorsDep,
    settings: SettingsDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
    sort: ProductSort = ProductSort.CREATED,
    q: Annotated[Text | None, Query(max_length=200, description="Words (prefix match)")] = None,
    category: Annotated[Category | None, Query()] = None,
) -> Page[ProductOut]:
    scope = f"products:{sort.value}:{q or ''}:{category or ''}"
    page = page_request(
        cursors,
        scope,
        limit,
        cursor,
        default=settings.page_limit_default,
        cap=settings.page_limit_max,
    )
    result = await service.list_products(session, page=page, sort=sort, q=q, category=category)
    items, next_cursor = page_response(request, response, cursors, scope, result)
    _public_cache(response, settings.catalog_cache_max_age)
    return Page(
        data=[ProductOut.model_validate(p) for p in items],
        next_cursor=next_cursor,
        has_more=result.has_more,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductIn, _: CatalogWriter, session: SessionDep, request: Request, response: Response
) -> ProductOut:
    product = await service.create_product(session, **body.model_dump())
    response.headers["Location"] = str(request.url_for("get_product", product_id=product.id))
    response.headers["ETag"] = etag_for(product.version)
    return ProductOut.model_validate(product)


@router.get(
    "/{product_id}", response_model=ProductOut, responses={304: {"description": "Not modified"}}
)
async def get_product(
    product_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> Any:
    product = await service.get_product(session, product_id)
    etag = etag_for(product.version)
    if is_not_modified(request, etag):
        not_modified = Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        _public_cache(not_modified, settings.catalog_cache_max_age)
        return not_modified
    response.headers["ETag"] = etag
    _public_cache(response, settings.catalog_cache_max_age)
    return ProductOut.model_validate(product)


@router.patch("/{product_id}", responses={412: {}, 428: {}})
async def update_product(
    product_id: uuid.UUID,
    body: ProductPatch,
    _: CatalogWriter,
    request: Request,
    session: SessionDep,
    response: Response,
) -> ProductOut:
    version = expected_version(request)
    product = await service.update_product(
        session, product_id, expected_version=version, changes=body.changes()
    )
    response.headers["ETag"] = etag_for(product.version)
    return ProductOut.model_validate(product)


@router.delete("/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_product(
    product_id: uuid.UUID, _: CatalogWriter, request: Request, session: SessionDep
) -> None:
    version = expected_version(request) if request.headers.get("if-match") else None
    await service.delete_product(session, product_id, expected_version=version)
