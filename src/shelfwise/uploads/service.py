"""Product images: attaching an uploaded file, and deleting files no product uses any more.

Files are named by content hash, so products with the same bytes share one file. A file
may only go when no `product_images` row names it, and only after the transaction that
dropped the last reference has committed (a rollback would bring the row back, pointing
at nothing). A transaction-level advisory lock per content hash orders the two critical
sections, so a file can never be unlinked under a row that was just committed for it:

- attach: lock the hash, rename the staged file into place, upsert the row, commit;
- release: lock the hash, count the rows naming it, unlink if none, commit.

A missing file is not an error (a release that ran twice, a file removed by hand).
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import delete, exists, func, select, text
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.catalog.errors import ProductNotFound
from shelfwise.catalog.models import Product
from shelfwise.uploads.models import ProductImage
from shelfwise.uploads.storage import ImageStore, Staged, Stored

log = structlog.get_logger("shelfwise.uploads")
LOCK_SQL = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def _lock_content(session: AsyncSession, sha256: str) -> None:
    await session.execute(LOCK_SQL, {"key": f"product-image:{sha256}"})


async def ensure_product(session: AsyncSession, product_id: uuid.UUID) -> None:
    """404 before a byte of the upload is read."""
    async with session.begin():
        if await session.scalar(select(Product.id).where(Product.id == product_id)) is None:
            raise ProductNotFound(f"No product with id {product_id}")


async def attach_image(
    session: AsyncSession, store: ImageStore, product_id: uuid.UUID, staged: Staged
) -> str | None:
    """Make the staged upload the product's image. Returns the content hash it replaced
    (to `release_image` now that the change is committed), None if there was none."""
    new = staged.stored
    try:
        async with session.begin():
            # The product row, locked (FOR NO KEY UPDATE: order lines' foreign-key checks do
            # not wait): a concurrent DELETE or PUT of the same product waits, so the
            # `previous` read here is the one this upsert replaces.
            locked = await session.scalar(
                select(Product.id).where(Product.id == product_id).with_for_update(key_share=True)
            )
            if locked is None:
                raise ProductNotFound(f"No product with id {product_id}")
            previous = await session.scalar(
                select(ProductImage.sha256).where(ProductImage.product_id == product_id)
            )
            await _lock_content(session, new.sha256)
            await store.place(staged)
            await session.execute(_upsert(product_id, new))
    except BaseException:
        await store.discard(staged)
        await _release_after_failure(session, store, new.sha256)
        raise
    return previous if previous != new.sha256 else None


def _upsert(product_id: uuid.UUID, stored: Stored) -> Insert:
    values = {"sha256": stored.sha256, "content_type": stored.content_type, "size": stored.size}
    return (
        insert(ProductImage)
        .values(product_id=product_id, **values)
        .on_conflict_do_update(
            index_elements=[ProductImage.product_id],
            set_={**values, "updated_at": func.clock_timestamp()},
        )
    )


async def detach_image(session: AsyncSession, product_id: uuid.UUID) -> str | None:
    """Inside the caller's transaction (product deletion): drop the image row and return
    its content hash, for `release_image` once that transaction has committed.

    The product row is locked first, as `attach_image` does, so a concurrent upload either
    committed before (its hash is returned here) or finds the product gone."""
    await session.execute(select(Product.id).where(Product.id == product_id).with_for_update())
    return await session.scalar(
        delete(ProductImage)
        .where(ProductImage.product_id == product_id)
        .returning(ProductImage.sha256)
    )


async def release_image(session: AsyncSession, store: ImageStore, sha256: str) -> bool:
    """Delete the file of `sha256` unless a product still uses it. Call it only after the
    transaction that removed the reference has committed. Returns True if it deleted."""
    async with session.begin():
        await _lock_content(session, sha256)
        used = await session.scalar(select(exists().where(ProductImage.sha256 == sha256)))
        if not used:
            await store.remove(sha256)
    if not used:
        log.info("product_image_file_deleted", sha256=sha256)
    return not used


async def release_quietly(session: AsyncSession, store: ImageStore, sha256: str) -> None:
    """`release_image` after a change the client must see succeed (it already committed):
    a failure here leaves an orphan file, logged, instead of answering 500."""
    try:
        await release_image(session, store, sha256)
    except Exception as exc:
        log.warning("product_image_release_failed", sha256=sha256, error=type(exc).__name__)


async def _release_after_failure(session: AsyncSession, store: ImageStore, sha256: str) -> None:
    # The file may have been placed before the transaction failed: remove it unless
    # another product uses the same bytes. Runs in a fresh transaction.
    if session.in_transaction():
        await session.rollback()
    await release_quietly(session, store, sha256)
