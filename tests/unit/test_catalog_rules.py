"""Catalog rules that need no database: search-query building and PATCH validation."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from shelfwise.catalog.schemas import ProductPatch
from shelfwise.catalog.service import prefix_tsquery

# A prefix term is a word, or a number that may carry the sign PostgreSQL's parser gives
# digits after a hyphen.
SAFE_TOKEN = re.compile(r"^(\w+:\*|\('-(\d+)':\* \| \2:\*\))$")


def tokens(query: str | None) -> list[str]:
    assert query is not None
    parts = query.split(" & ")
    assert all(SAFE_TOKEN.fullmatch(part) for part in parts), query
    return parts


# -- prefix_tsquery ----------------------------------------------------------------------


def test_words_become_prefix_terms() -> None:
    assert prefix_tsquery("red mug") == "red:* & mug:*"


def test_single_word_and_sku() -> None:
    assert prefix_tsquery("mug") == "mug:*"
    assert tokens(prefix_tsquery("SKU-123")) == ["sku:*", "('-123':* | 123:*)"]


def test_hyphenated_numbers_match_either_way_postgres_indexes_them() -> None:
    # `KET-03` is indexed as `ket` + `-03`, `A1-03` as `a1-03` + `a1` + `03`.
    assert prefix_tsquery("KET-03") == "ket:* & ('-03':* | 03:*)"
    assert tokens(prefix_tsquery("a1-03 x")) == ["a1:*", "('-03':* | 03:*)", "x:*"]
    assert prefix_tsquery("red-mug") == "red:* & mug:*"  # only digits take the sign
    assert prefix_tsquery("03") == "03:*"


def test_case_is_folded() -> None:
    assert prefix_tsquery("Red MUG") == "red:* & mug:*"


def test_unicode_words_survive() -> None:
    assert prefix_tsquery("Café crème") == "café:* & crème:*"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'); drop table x; --", ["drop:*", "table:*", "x:*"]),
        ("mug & !cup | (plate)", ["mug:*", "cup:*", "plate:*"]),
        ("a:* <-> b", ["a:*", "b:*"]),
        ("x' | '-1':* | y", ["x:*", "('-1':* | 1:*)", "y:*"]),
        ("-- 1; --2", ["1:*", "('-2':* | 2:*)"]),
        ("red\x00mug", ["red:*", "mug:*"]),
        ("  spaced\t\nout  ", ["spaced:*", "out:*"]),
        ('"quoted" \\back', ["quoted:*", "back:*"]),
    ],
)
def test_punctuation_and_injection_leave_only_word_tokens(text: str, expected: list[str]) -> None:
    assert tokens(prefix_tsquery(text)) == expected


@pytest.mark.parametrize("text", ["", "   ", "'); --", "&|!():*<->", "\x00"])
def test_nothing_searchable_gives_none(text: str) -> None:
    assert prefix_tsquery(text) is None


def test_at_most_eight_words() -> None:
    text = " ".join(f"w{i}" for i in range(20))
    assert tokens(prefix_tsquery(text)) == [f"w{i}:*" for i in range(8)]


# -- ProductPatch ------------------------------------------------------------------------


def test_empty_patch_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least one field"):
        ProductPatch.model_validate({})


@pytest.mark.parametrize("field", ["sku", "name", "description", "category", "price_minor"])
def test_null_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match=f"cannot be null: {field}"):
        ProductPatch.model_validate({field: None})


def test_all_nulls_are_named() -> None:
    with pytest.raises(ValidationError, match="cannot be null: currency, name"):
        ProductPatch.model_validate({"name": None, "currency": None, "price_minor": 5})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        ProductPatch.model_validate({"name": "Mug", "version": 9})


@pytest.mark.parametrize(
    "body",
    [
        {"price_minor": -1},
        {"currency": "eur"},
        {"sku": "has space"},
        {"name": "   "},
        {"name": "nul\x00byte"},
        {"category": "Upper"},
    ],
)
def test_field_rules_apply_to_patches(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ProductPatch.model_validate(body)


def test_changes_contains_only_the_fields_sent() -> None:
    patch = ProductPatch.model_validate({"name": "  Big mug ", "price_minor": 0})
    assert patch.changes() == {"name": "Big mug", "price_minor": 0}


def test_changes_keeps_falsy_values() -> None:
    patch = ProductPatch.model_validate({"description": ""})
    assert patch.changes() == {"description": ""}
