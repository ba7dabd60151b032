"""`shelfwise db top`: the heaviest statements, or a clear refusal without the extension."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from shelfwise.cli import app
from shelfwise.observability.dbtop import StatementStats, statements_table
from tests.pg_support import DEBIAN_PG15_BIN, disposable_postgres, require_bin_dir


def _has_pg_stat_statements(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
        ).fetchone()
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    return row is not None and preload is not None and "pg_stat_statements" in preload[0]


def test_db_top_prints_the_heaviest_statements_or_says_why_not(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["db", "top", "--limit", "5"])
    if _has_pg_stat_statements(database_url):
        assert result.exit_code == 0, result.output
        assert "calls" in result.output
        assert "total ms" in result.output
    else:  # the embedded pgserver ships no contrib modules
        assert result.exit_code == 1
        assert "pg_stat_statements is not available" in result.output


def test_statements_table_shows_calls_mean_total_and_rows() -> None:
    table = statements_table(
        [StatementStats(calls=1200, mean_ms=2.5, total_ms=3000.0, rows=1200, query="SELECT ?")]
    )
    cells = [list(column.cells) for column in table.columns]
    assert cells == [["1,200"], ["2.50"], ["3,000.0"], ["1,200"], ["SELECT ?"]]


def test_the_embedded_cluster_asks_for_pg_stat_statements_only_when_shipped(
    server_url: str,
) -> None:
    from shelfwise.embedded import preload_statement_statistics

    with psycopg.connect(server_url, autocommit=True) as conn:
        shipped = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
        ).fetchone()
    if shipped:
        pytest.skip("this server ships pg_stat_statements; ALTER SYSTEM would persist")
    assert preload_statement_statistics(server_url) is False


def test_db_top_reads_pg_stat_statements_of_a_server_that_preloads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The success path, on Debian's PostgreSQL 15 (pgserver's build has no contrib):
    statements run here come back with their calls, mean, total and rows."""
    bin_dir = require_bin_dir(DEBIAN_PG15_BIN, "postgresql-15")
    preload = {"shared_preload_libraries": "pg_stat_statements"}
    with disposable_postgres(bin_dir, preload) as pg:
        url = pg.create_database("dbtop")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            conn.execute("CREATE TABLE shelf_probe (n int)")
            for n in range(7):
                conn.execute("INSERT INTO shelf_probe SELECT g FROM generate_series(1, %s) g", (n,))
        monkeypatch.setenv("DATABASE_URL", url)
        result = CliRunner().invoke(app, ["db", "top", "--limit", "50"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "calls" in line)
    for column in ("calls", "mean ms", "total ms", "rows"):
        assert column in header
    (insert,) = [line for line in result.output.splitlines() if "INSERT INTO shelf_probe" in line]
    cells = [cell.strip() for cell in insert.split("│") if cell.strip()]
    calls, mean_ms, total_ms, rows = cells[:4]
    assert calls == "7"
    assert rows == "21"  # 0 + 1 + ... + 6 rows inserted
    assert float(total_ms.replace(",", "")) >= float(mean_ms) > 0
