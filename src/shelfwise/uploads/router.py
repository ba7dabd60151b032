"""`PUT /v1/products/{id}/image` (catalog:write, streamed) and `GET` (public, cacheable).

The global body limit (1 MiB) exempts this PUT (see `app.py`); the route enforces
`image_max_bytes` itself while streaming.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import select
from starlette.responses import FileResponse
from starlette.types import Scope

from shelfwise.catalog.service import ProductNotFound
from shelfwise.http.conditional import is_not_modified
from shelfwise.http.deps import ContextDep
from shelfwise.identity.dependencies import CatalogWriter
from shelfwise.uploads import service as images
from shelfwise.uploads.models import ProductImage
from shelfwise.uploads.storage import TYPES as IMAGE_TYPES
from shelfwise.uploads.storage import ImageStore

log = structlog.get_logger("shelfwise.uploads")

router = APIRouter(prefix="/v1/products", tags=["products"])
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=60, must-revalidate"
UPLOAD_PATH = re.compile(r"^/v1/products/[^/]+/image$")


def is_image_upload(scope: Scope) -> bool:
    """For `BodySizeLimitMiddleware`: this route streams with a limit of its own."""
    return scope.get("method") == "PUT" and bool(UPLOAD_PATH.match(scope.get("path", "")))


def is_streamed_upload(scope: Scope) -> bool:
    """For `BodySizeLimitMiddleware`: routes that stream to disk with limits of their own
    (product images, CSV imports)."""
    method, path = scope.get("method"), scope.get("path", "")
    return is_image_upload(scope) or (method == "POST" and path == "/v1/imports")


class ImageOut(BaseModel):
    product_id: uuid.UUID
    content_type: str
    size: int
    sha256: str
    url: str


def _etag(sha: str) -> str:
    return f'"{sha}"'


def _url(product_id: uuid.UUID, sha: str) -> str:
    return f"/v1/products/{product_id}/image?v={sha[:16]}"


@router.put(
    "/{product_id}/image",
    responses={400: {}, 404: {}, 413: {}, 415: {}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in ("image/png", "image/jpeg", "image/webp")
            },
        }
    },
)
async def put_image(
    product_id: uuid.UUID, request: Request, writer: CatalogWriter, ctx: ContextDep
) -> ImageOut:
    """Replace the product's image. The body is the raw image (PNG, JPEG or WebP; the
    type is read from the bytes), at most `image_max_bytes`."""
    store = ImageStore(ctx.settings.data_dir / "images")
    length = request.headers.get("content-length")
    async with ctx.db.sessions() as session:
        await images.ensure_product(session, product_id)
    # No connection is held while the body streams in.
    staged = await store.stage(
        request.stream(),
        max_bytes=ctx.settings.image_max_bytes,
        declared_length=int(length) if length and length.isdigit() else None,
        declared_type=request.headers.get("content-type"),
    )
    async with ctx.db.sessions() as session:
        replaced = await images.attach_image(session, store, product_id, staged)
        if replaced is not None:
            await images.release_quietly(session, store, replaced)
    stored = staged.stored
    values = {"sha256": stored.sha256, "content_type": stored.content_type, "size": stored.size}
    return ImageOut(product_id=product_id, url=_url(product_id, stored.sha256), **values)


IMAGE_CONTENT = {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES}


@router.get(
    "/{product_id}/image",
    response_class=Response,
    responses={
        200: {"description": "The image, in the type it was uploaded as", "content": IMAGE_CONTENT},
        304: {"description": "Not modified (If-None-Match)"},
        404: {},
    },
)
async def get_image(
    product_id: uuid.UUID,
    request: Request,
    ctx: ContextDep,
    v: Annotated[str | None, Query(max_length=64, description="Content version")] = None,
) -> Response:
    """The image. With `?v=` of the current version (the `url` the PUT returned) it is
    cacheable for a year; without, it is revalidated with `If-None-Match` (304)."""
    async with ctx.db.sessions() as session, session.begin():
        image = await session.scalar(
            select(ProductImage).where(ProductImage.product_id == product_id)
        )
    if image is None:
        raise ProductNotFound(f"Product {product_id} has no image")
    etag = _etag(image.sha256)
    cache = IMMUTABLE if v and image.sha256.startswith(v) and len(v) >= 16 else REVALIDATE
    headers = {"ETag": etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if is_not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    path = ImageStore(ctx.settings.data_dir / "images").path_of(image.sha256)
    if not path.is_file():  # the store lost it (restored backup, manual clean-up)
        log.error("product_image_file_missing", product_id=str(product_id), sha256=image.sha256)
        raise ProductNotFound(f"The image of product {product_id} is not available")
    return FileResponse(path, media_type=image.content_type, headers=headers)
