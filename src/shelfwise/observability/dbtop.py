"""`shelfwise db top`: the heaviest statements, from `pg_stat_statements`.

The extension needs `shared_preload_libraries = 'pg_stat_statements'` (a server restart)
and `CREATE EXTENSION pg_stat_statements` in the database (docs/observability.md); the
embedded cluster has both when it runs a system PostgreSQL (shelfwise.embedded). When
either is missing this says which and how to enable it, and exits 1, instead of printing
an empty table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

HOW_TO_ENABLE = (
    "Embedded PostgreSQL: pgserver's build has no contrib modules. Install a system "
    "PostgreSQL (apt-get install postgresql-15) and start a new data directory (move "
    "./var/pg away): a new embedded cluster then runs it with pg_stat_statements "
    "preloaded. Any other server: shared_preload_libraries = 'pg_stat_statements', a "
    "restart, then CREATE EXTENSION pg_stat_statements (docs/observability.md)."
)

db_app = typer.Typer(help="Database diagnostics.", no_args_is_help=True)

TOP_SQL = """
SELECT calls, mean_exec_time, total_exec_time, rows, query
  FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY total_exec_time DESC
 LIMIT %s
"""


@dataclass(frozen=True, slots=True)
class StatementStats:
    calls: int
    mean_ms: float
    total_ms: float
    rows: int
    query: str


class StatementsUnavailable(Exception):
    """pg_stat_statements is not installed, not preloaded, or not created here."""


def heaviest_statements(url: str, limit: int) -> list[StatementStats]:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows = conn.execute(TOP_SQL, (limit,)).fetchall()
        except psycopg.Error as exc:
            raise StatementsUnavailable(str(exc).strip().splitlines()[0]) from exc
    return [
        StatementStats(int(calls), float(mean), float(total), int(count), " ".join(query.split()))
        for calls, mean, total, count, query in rows
    ]


def statements_table(statements: list[StatementStats], *, width: int = 80) -> Table:
    table = Table(title="Heaviest statements (by total time)")
    for column in ("calls", "mean ms", "total ms", "rows"):
        table.add_column(column, justify="right")
    table.add_column("query", overflow="fold")
    for stats in statements:
        table.add_row(
            f"{stats.calls:,}",
            f"{stats.mean_ms:.2f}",
            f"{stats.total_ms:,.1f}",
            f"{stats.rows:,}",
            stats.query[: width * 3],
        )
    return table


@db_app.command()
def top(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many statements")] = 20,
) -> None:
    """Print the statements that took the most total time (calls, mean, total, rows)."""
    from shelfwise.cli import _database_url
    from shelfwise.config import load_settings
    from shelfwise.db import libpq_url

    settings = load_settings()
    console = Console()
    try:
        statements = heaviest_statements(libpq_url(_database_url(settings)), limit)
    except StatementsUnavailable as exc:
        Console(stderr=True).print(
            f"[red]pg_stat_statements is not available: {exc}[/]\n{HOW_TO_ENABLE}"
        )
        raise typer.Exit(1) from exc
    console.print(statements_table(statements))
