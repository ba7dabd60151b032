"""`batches.prepared`: a statement with psycopg placeholders as the server prepares it."""

from __future__ import annotations

import pytest

from shelfwise.batches import prepared


def test_named_parameters_are_numbered_once_each_in_order_of_first_use() -> None:
    statement = prepared("SELECT %(b)s, %(a)s WHERE x = %(b)s")
    assert statement.prepare == f"PREPARE {statement.name} AS SELECT $1, $2 WHERE x = $1"
    assert statement.execute == f"EXECUTE {statement.name}(%s, %s)"
    assert statement.arguments({"a": 1, "b": 2}) == [2, 1]


def test_positional_parameters_keep_their_order_and_percent_signs_stay() -> None:
    statement = prepared("SELECT %s WHERE name LIKE 'a%%' AND id = %s")
    assert statement.prepare.endswith("SELECT $1 WHERE name LIKE 'a%' AND id = $2")
    assert statement.arguments(("x", 7)) == ["x", 7]


def test_a_statement_without_parameters_is_executed_bare() -> None:
    statement = prepared("SELECT count(*) FROM orders")
    assert statement.execute == f"EXECUTE {statement.name}"


def test_the_name_follows_the_text() -> None:
    assert prepared("SELECT 1").name == prepared("SELECT 1").name
    assert prepared("SELECT 1").name != prepared("SELECT 2").name
    assert prepared("SELECT 1").name.startswith("shelfwise_")


def test_mixed_placeholders_are_refused() -> None:
    with pytest.raises(ValueError, match="positional or named"):
        prepared("SELECT %s, %(a)s")
