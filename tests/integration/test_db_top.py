"""`shelfwise db top`: the heaviest statements from the embedded cluster's
`pg_stat_statements`, or a refusal that says how to enable it; and which PostgreSQL
binaries the embedded cluster runs (docs/decisions/0029)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from shelfwise.cli import app
from shelfwise.embedded import (
    EmbeddedVersionMismatch,
    choose_binaries,
    pgserver_binaries,
    start_embedded,
    stop_embedded,
    system_binaries,
)
from shelfwise.observability.dbtop import StatementStats, statements_table


def _preloads_statements(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    return preload is not None and "pg_stat_statements" in preload[0]


def test_db_top_prints_the_heaviest_statements_or_says_how_to_enable_them(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["db", "top", "--limit", "5"])
    if _preloads_statements(database_url):
        assert result.exit_code == 0, result.output
        assert "total ms" in result.output
    else:  # the suite's server is pgserver's build (no contrib modules)
        assert result.exit_code == 1
        assert "pg_stat_statements is not available" in result.output
        assert "apt-get install postgresql-15" in result.output


def test_statements_table_shows_calls_mean_total_and_rows() -> None:
    table = statements_table(
        [StatementStats(calls=1200, mean_ms=2.5, total_ms=3000.0, rows=1200, query="SELECT ?")]
    )
    cells = [list(column.cells) for column in table.columns]
    assert cells == [["1,200"], ["2.50"], ["3,000.0"], ["1,200"], ["SELECT ?"]]


def _fake_system(root: Path, major: str, *, statements: bool) -> None:
    (root / major / "bin").mkdir(parents=True)
    (root / major / "bin" / "postgres").touch()
    (root / major / "lib").mkdir()
    if statements:
        (root / major / "lib" / "pg_stat_statements.so").touch()


def test_a_new_cluster_runs_a_system_postgresql_that_ships_pg_stat_statements(
    tmp_path: Path,
) -> None:
    system = tmp_path / "usr-lib-postgresql"
    _fake_system(system, "14", statements=False)
    fresh = tmp_path / "fresh"
    assert choose_binaries(fresh, system_root=system).source == "pgserver"
    _fake_system(system, "15", statements=True)
    chosen = choose_binaries(fresh, system_root=system)
    assert (chosen.source, chosen.major, chosen.statements) == ("system", "15", True)
    # The suite (and a machine without a system PostgreSQL) keeps pgserver.
    assert choose_binaries(fresh, prefer_system=False, system_root=system).source == "pgserver"


def test_an_existing_cluster_keeps_the_major_that_created_it(tmp_path: Path) -> None:
    system = tmp_path / "usr-lib-postgresql"
    _fake_system(system, "15", statements=True)
    pgdata = tmp_path / "pg"
    pgdata.mkdir()
    (pgdata / "postgresql.conf").write_text("#shared_preload_libraries = ''\n")
    (pgdata / "PG_VERSION").write_text(pgserver_binaries().major + "\n")
    assert choose_binaries(pgdata, system_root=system).source == "pgserver"
    # Created by a system build of pgserver's major, preloading the module: that build.
    _fake_system(system, pgserver_binaries().major, statements=True)
    (pgdata / "postgresql.conf").write_text("shared_preload_libraries = 'pg_stat_statements'\n")
    assert choose_binaries(pgdata, system_root=system).source == "system"
    (pgdata / "PG_VERSION").write_text("15\n")
    assert choose_binaries(pgdata, system_root=system).bin_dir == system / "15" / "bin"
    (pgdata / "PG_VERSION").write_text("9\n")
    with pytest.raises(EmbeddedVersionMismatch, match="install postgresql-9"):
        choose_binaries(pgdata, system_root=system)


def _system_with_statements() -> None:
    if any(each.statements for each in system_binaries()):
        return
    reason = "no system PostgreSQL with pg_stat_statements (apt-get install postgresql-15)"
    if os.environ.get("SHELFWISE_TEST_REQUIRE") == "all":
        pytest.fail(reason + " and SHELFWISE_TEST_REQUIRE=all")
    pytest.skip(reason)


def test_db_top_reads_pg_stat_statements_of_a_new_embedded_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The embedded path `make run` takes on a fresh machine with Debian's PostgreSQL:
    the cluster preloads the module from its first start, the database has the
    extension, and statements run here come back with their calls, mean, total, rows."""
    _system_with_statements()
    # Under /tmp, not tmp_path: as root the server's own user must traverse its parents.
    data_dir = Path(tempfile.mkdtemp(prefix="shelfwise-dbtop-"))
    try:
        url = start_embedded(data_dir, database="dbtop")
        with psycopg.connect(url, autocommit=True) as conn:
            extensions = conn.execute("SELECT extname FROM pg_extension").fetchall()
            conn.execute("CREATE TABLE shelf_probe (n int)")
            for n in range(7):
                conn.execute("INSERT INTO shelf_probe SELECT g FROM generate_series(1, %s) g", (n,))
        monkeypatch.setenv("DATABASE_URL", url)
        result = CliRunner().invoke(app, ["db", "top", "--limit", "50"], env={"COLUMNS": "200"})
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    assert ("pg_stat_statements",) in extensions
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
