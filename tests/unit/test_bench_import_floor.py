"""bench.import_floor: its variants, its batches, and that its writes are the import's."""

from __future__ import annotations

import re

import pytest

from bench.import_floor import (
    EVENTS,
    MERGE,
    Variant,
    batch_bounds,
    merge_statement,
    parse_variants,
)
from shelfwise.catalog.store import _PAYLOAD, UPSERT_STAGED_PRODUCTS
from shelfwise.inventory.store import _LEDGER_AND_EVENTS, _STOCK_CHANGED, CREATE_STAGED_LEVELS


def text(sql: object) -> str:
    return sql if isinstance(sql, str) else sql.as_string(None)  # type: ignore[attr-defined]


def inserts(sql: str) -> dict[str, list[tuple[str, ...]]]:
    """Each INSERT's table and column list, in the order they appear."""
    found: dict[str, list[tuple[str, ...]]] = {}
    for table, columns in re.findall(r"INSERT INTO (\w+)(?: AS \w+)? \(([^)]*)\)", sql):
        found.setdefault(table, []).append(tuple(c.strip() for c in columns.split(",")))
    return found


def selected_after(sql: str, table: str) -> str:
    """The SELECT list feeding `INSERT INTO table`, whitespace collapsed."""
    match = re.search(rf"INSERT INTO {table}\b[^)]*\)\s*SELECT (.*?)\s+FROM ", sql, re.S)
    assert match is not None, table
    return " ".join(match.group(1).split())


def test_variants_parse_with_names() -> None:
    variants = parse_variants("1000x2, allx1,events-1000x1,")
    assert variants == [Variant(1000, 2, False), Variant(0, 1, False), Variant(1000, 1, True)]
    assert [v.name for v in variants] == ["floor-1000x2", "floor-allx1", "floor+events-1000x1"]
    assert parse_variants("") == []


@pytest.mark.parametrize("spec", ["1000", "0x1", "1000x3", "allx2", "events1000x1"])
def test_bad_variants_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="floor variant"):
        parse_variants(spec)


def test_batches_cover_every_record_once() -> None:
    assert batch_bounds(2500, 1000) == [(1, 1000), (1001, 2000), (2001, 2500)]
    assert batch_bounds(2000, 1000) == [(1, 1000), (1001, 2000)]
    assert batch_bounds(2500, 0) == [(1, 2500)]


def test_the_floor_writes_the_columns_the_import_writes() -> None:
    floor = inserts(MERGE)
    products = inserts(UPSERT_STAGED_PRODUCTS)["products"]
    levels = inserts(CREATE_STAGED_LEVELS)["stock_levels"]
    ledger = inserts(text(_LEDGER_AND_EVENTS))["stock_movements"]
    assert floor["products"] == products
    assert floor["stock_levels"] == levels
    assert floor["stock_movements"] == ledger
    # the ledger row's values too (kind and reason), not only its columns; the import's
    # actor is a parameter, the floor's none (an unattended import)
    imported = selected_after(text(_LEDGER_AND_EVENTS), "stock_movements")
    assert selected_after(MERGE, "stock_movements") == imported.replace("%(actor_id)s", "NULL")


def test_events_are_only_in_the_events_variant_with_the_imports_payloads() -> None:
    without, with_events = text(merge_statement(False)), text(merge_statement(True))
    assert "outbox_events" not in without
    imported = inserts(UPSERT_STAGED_PRODUCTS)["outbox_events"]
    imported += inserts(text(_LEDGER_AND_EVENTS))["outbox_events"]
    assert inserts(with_events)["outbox_events"] == imported  # product event, stock event
    events = text(EVENTS)
    assert text(_PAYLOAD) in events
    assert text(_STOCK_CHANGED) in events
