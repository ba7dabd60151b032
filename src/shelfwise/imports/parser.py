"""Reading a products-and-stock CSV in batches, validating each row (synchronous: runs in
a thread).

Why a thread and not a process pool: the `csv` module and pydantic's validator are C
and Rust code, so the worker thread keeps the event loop responsive; a process pool
would have to pickle every validated batch back to the worker (the database work
happens there), which costs about as much as parsing it. Memory stays flat: one batch of
rows at a time, plus 8 bytes per key seen (`seen.py`; duplicates inside one file are refused).

A row's key is its SKU, or its SKU and location when it carries stock: a product stocked
in three locations takes three rows (each repeating the product's columns).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shelfwise.catalog.schemas import ProductIn
from shelfwise.imports.seen import SeenKeys

COLUMNS = ("sku", "name", "category", "price_minor", "currency", "description")
REQUIRED = ("sku", "name", "price_minor", "currency")
STOCK_COLUMNS = ("location", "on_hand")
MAX_ON_HAND = 1_000_000_000
MAX_ERRORS_KEPT = 100


class NotUtf8(ValueError):
    pass


@dataclass
class BadRow:
    line: int
    error: str


@dataclass(slots=True)
class ImportRow:
    """A valid row: the product's columns, and the absolute stock it sets, if any."""

    line: int
    product: dict[str, Any]
    location: str | None = None
    on_hand: int | None = None


@dataclass
class Batch:
    rows: list[ImportRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    lines: int = 0  # data lines read so far (whole file)
    done: bool = False


class CsvBatches:
    """`next_batch()` until `done`. Line numbers are the file's (header = line 1)."""

    def __init__(self, path: Path, batch_size: int = 1000, *, stock_allowed: bool = True) -> None:
        self.batch_size = batch_size
        self._stock_allowed = stock_allowed
        self._file = open(path, encoding="utf-8-sig", errors="strict", newline="")  # noqa: SIM115
        self._reader = csv.reader(self._file)
        self._seen = SeenKeys()
        self._lines = 0
        self._header: list[str] | None = None

    def close(self) -> None:
        self._file.close()

    def _read_header(self) -> list[str]:
        header = [h.strip().lower() for h in next(self._reader, [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ValueError(f"line 1: the header lacks {', '.join(missing)}")
        stock = [c for c in STOCK_COLUMNS if c in header]
        if stock and len(stock) != len(STOCK_COLUMNS):
            raise ValueError("line 1: stock needs both columns, location and on_hand")
        if stock and not self._stock_allowed:
            raise ValueError("line 1: stock columns need the stock:write scope")
        return header

    def next_batch(self) -> Batch:
        batch = Batch()
        try:
            if self._header is None:
                self._header = self._read_header()
            header = self._header
            for record in self._reader:
                self._lines += 1
                line = self._reader.line_num
                if not any(cell.strip() for cell in record):
                    continue  # blank line
                if len(record) != len(header):
                    batch.bad.append(
                        BadRow(line, f"expected {len(header)} fields, found {len(record)}")
                    )
                else:
                    self._validate(dict(zip(header, record, strict=True)), line, batch)
                if len(batch.rows) + len(batch.bad) >= self.batch_size:
                    break
            else:
                batch.done = True
        except UnicodeDecodeError as exc:
            raise NotUtf8(
                f"the file is not UTF-8 (after line {self._reader.line_num}): {exc.reason}"
            ) from exc
        except csv.Error as exc:
            batch.bad.append(BadRow(self._reader.line_num, f"unreadable CSV: {exc}"))
            batch.done = True
        batch.lines = self._lines
        return batch

    def _validate(self, raw: dict[str, str], line: int, batch: Batch) -> None:
        values = {k: v.strip() for k, v in raw.items() if k in COLUMNS and v.strip() != ""}
        try:
            product = ProductIn.model_validate(values)
            location, on_hand = _stock(raw.get("location", ""), raw.get("on_hand", ""))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "row"
            batch.bad.append(BadRow(line, f"{where}: {first['msg']}"))
            return
        except ValueError as exc:
            batch.bad.append(BadRow(line, str(exc)))
            return
        if not self._seen.add(product.sku if location is None else f"{product.sku}\0{location}"):
            where = "" if location is None else f" at location {location!r}"
            batch.bad.append(BadRow(line, f"duplicate SKU {product.sku!r}{where} in this file"))
            return
        batch.rows.append(ImportRow(line, product.model_dump(), location, on_hand))


def _stock(location: str, on_hand: str) -> tuple[str | None, int | None]:
    """Both cells empty: no stock on this row. Otherwise both are required."""
    location, on_hand = location.strip(), on_hand.strip()
    if not location and not on_hand:
        return None, None
    if not location:
        raise ValueError("location: required when on_hand is given")
    if not on_hand:
        raise ValueError("on_hand: required when location is given")
    if not (on_hand.isascii() and on_hand.isdigit()) or int(on_hand) > MAX_ON_HAND:
        raise ValueError(f"on_hand: a whole number from 0 to {MAX_ON_HAND:,}, not {on_hand!r}")
    return location, int(on_hand)
