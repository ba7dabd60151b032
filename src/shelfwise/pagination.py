"""Keyset pagination primitives shared by services.

A page is asked for with a limit and the sort key of the last row already seen; services
fetch `limit + 1` rows to learn whether more exist. Keyset (not OFFSET) pagination never
repeats or skips a row that existed when the walk started, however many rows are inserted
meanwhile, and costs the same on page 1 and page 1,000.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    after: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PageResult(Generic[T]):
    items: list[T]
    has_more: bool
    last_key: tuple[str, ...] | None


def page_from_rows(
    rows: Sequence[T], limit: int, key: Callable[[T], tuple[str, ...]]
) -> PageResult[T]:
    items = list(rows[:limit])
    has_more = len(rows) > limit
    return PageResult(items=items, has_more=has_more, last_key=key(items[-1]) if has_more else None)
