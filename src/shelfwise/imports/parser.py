"""Reading a products-and-stock CSV once, as a stream of `COPY` data (synchronous: runs in
a thread), and the row rules every import row is judged by.

The file is read with the `csv` module (C code) and re-written, chunk by chunk, as CSV
for `COPY ... FROM STDIN` into the import's staging table (`imports/staging.py`): each
row gains its record number (`rec`, the batch key) and its line number (the file's:
header = line 1; a quoted cell spanning lines is numbered by the line where it ends),
and keeps only the columns the import reads, in a fixed order. Nothing else happens
per row in Python: the values are checked set-based in SQL. What SQL cannot judge
cheaply stays here, and is written into the staging row's `error`:

- a row with more or fewer fields than the header (`expected 6 fields, found 4`);
- a row holding a NUL character (PostgreSQL text cannot hold one, and `COPY` would fail
  the whole file on it);
- an unreadable CSV (an unterminated quote): reported at its line, the rest ignored.

`check_row` is the one definition of what a valid row is (pydantic's `ProductIn` and the
stock cells' rules): the SQL check in `staging.py` accepts only a strict subset of it
(canonical cells: no surrounding whitespace, plain digits), and every row that subset
does not accept is judged here, so a row is refused exactly when `check_row` refuses it,
with its message.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shelfwise.catalog.schemas import ProductIn

COLUMNS = ("sku", "name", "category", "price_minor", "currency", "description")
REQUIRED = ("sku", "name", "price_minor", "currency")
STOCK_COLUMNS = ("location", "on_hand")
CELLS = (*COLUMNS, *STOCK_COLUMNS)  # the staging table's cell columns, in this order
MAX_ON_HAND = 1_000_000_000
MAX_ERRORS_KEPT = 100


class NotUtf8(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class CheckedRow:
    """A valid row's values, as `ProductIn` normalises them (stripped, defaults filled)."""

    sku: str
    name: str
    category: str
    price_minor: int
    currency: str
    description: str
    location: str | None
    on_hand: int | None


def check_row(cells: dict[str, str]) -> CheckedRow | str:
    """The row rules: the valid row's values, or the refusal as a report line."""
    values = {k: v.strip() for k, v in cells.items() if k in COLUMNS and v.strip() != ""}
    try:
        product = ProductIn.model_validate(values)
        location, on_hand = _stock(cells.get("location", ""), cells.get("on_hand", ""))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "row"
        return f"{where}: {first['msg']}"
    except ValueError as exc:
        return str(exc)
    return CheckedRow(
        product.sku,
        product.name,
        product.category,
        product.price_minor,
        product.currency,
        product.description,
        location,
        on_hand,
    )


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


@dataclass
class Chunk:
    data: bytes  # CSV for COPY: rec, line, error, then `columns`
    records: int  # records read so far (whole file; blank lines included)
    done: bool = False


class CsvToCopy:
    """`header()` once, then `next_chunk()` until `done`."""

    def __init__(self, path: Path, *, stock_allowed: bool = True, chunk_rows: int = 20_000):
        self._stock_allowed = stock_allowed
        self._chunk_rows = chunk_rows
        self._file = open(path, encoding="utf-8-sig", errors="strict", newline="")  # noqa: SIM115
        self._reader = csv.reader(self._file)
        self._records = 0
        self.columns: tuple[str, ...] = ()  # the CELLS this file has, in CELLS order
        self._width = 0
        self._cells: Any = None  # itemgetter: a record's `columns` cells
        self._sku = 0  # the header's index of `sku`

    def close(self) -> None:
        self._file.close()

    def header(self) -> tuple[str, ...]:
        """Read and check the header; returns the columns the staging rows carry."""
        try:
            header = [h.strip().lower() for h in next(self._reader, [])]
        except UnicodeDecodeError as exc:
            raise NotUtf8(f"the file is not UTF-8 (line 1): {exc.reason}") from exc
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ValueError(f"line 1: the header lacks {', '.join(missing)}")
        stock = [c for c in STOCK_COLUMNS if c in header]
        if stock and len(stock) != len(STOCK_COLUMNS):
            raise ValueError("line 1: stock needs both columns, location and on_hand")
        if stock and not self._stock_allowed:
            raise ValueError("line 1: stock columns need the stock:write scope")
        self.columns = tuple(c for c in CELLS if c in header)
        self._width = len(header)
        self._sku = header.index("sku")
        self._cells = itemgetter(*(header.index(c) for c in self.columns))
        return self.columns

    def next_chunk(self) -> Chunk:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        rows: list[tuple[Any, ...]] = []
        reader, width, cells, sku_at = self._reader, self._width, self._cells, self._sku
        done = False
        try:
            for record in reader:
                self._records += 1
                if len(record) != width:
                    if any(cell.strip() for cell in record):
                        rows.append(self._bad(f"expected {width} fields, found {len(record)}"))
                elif not (sku := record[sku_at]) or sku.isspace():
                    if any(cell.strip() for cell in record):  # else: a blank line, skipped
                        rows.append((self._records, reader.line_num, None, *cells(record)))
                else:
                    rows.append((self._records, reader.line_num, None, *cells(record)))
                if len(rows) >= self._chunk_rows:
                    break
            else:
                done = True
        except UnicodeDecodeError as exc:
            raise NotUtf8(
                f"the file is not UTF-8 (after line {reader.line_num}): {exc.reason}"
            ) from exc
        except csv.Error as exc:
            self._records += 1
            rows.append(self._bad(f"unreadable CSV: {exc}"))
            done = True
        writer.writerows(rows)
        text = out.getvalue()
        if "\x00" in text:  # rare: judge those rows here, COPY cannot carry them
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(self._without_nul(rows))
            text = out.getvalue()
        return Chunk(text.encode(), self._records, done)

    def _bad(self, error: str) -> tuple[Any, ...]:
        return (self._records, self._reader.line_num, error, *([""] * len(self.columns)))

    def _without_nul(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        clean: list[tuple[Any, ...]] = []
        for row in rows:
            if not any("\x00" in str(cell) for cell in row):
                clean.append(row)
                continue
            verdict = check_row(dict(zip(self.columns, row[3:], strict=True)))
            error = verdict if isinstance(verdict, str) else "row: must not contain NUL characters"
            clean.append((row[0], row[1], error, *([""] * len(self.columns))))
        return clean
