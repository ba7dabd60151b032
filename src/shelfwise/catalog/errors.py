from __future__ import annotations

from shelfwise.errors import NotFound


class ProductNotFound(NotFound):
    code = "product_not_found"
    title = "Product not found"
