"""pgbouncer in transaction-pooling mode, rendered from the upstream DSN.

Transaction pooling lends a server connection per transaction, so many client connections
(every pool of every instance) share a few server connections. What that costs is listed
in docs/deploy.md ("pgbouncer caveats"): no session state across transactions, hence the
direct DSN for LISTEN and session advisory locks, no prepared statements (Debian's
pgbouncer 1.18 cannot track them), and no `options` startup parameter, so the statement
timeout is set here, on each server connection, with `connect_query`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from shelfwise.db import libpq_url


@dataclass(frozen=True, slots=True)
class PoolSizes:
    # Server connections per database/user pair: what PostgreSQL actually sees.
    pool: int = 20
    # Client connections pgbouncer accepts (all instances' pools together).
    clients: int = 1000


def _quoted(value: str) -> str:
    """A libpq connection-string value, single-quoted with escapes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_pgbouncer(
    directory: Path,
    upstream_url: str,
    port: int,
    *,
    statement_timeout_ms: int,
    sizes: PoolSizes | None = None,
) -> Path:
    """Write `pgbouncer.ini` and `userlist.txt` under `directory`; return the ini's path.

    Any database name is forwarded to the upstream server (`*`), so one pgbouncer serves
    whatever database the DSN names (the tests' per-test copies included)."""
    sizes = sizes or PoolSizes()
    upstream = conninfo_to_dict(libpq_url(upstream_url))
    user = str(upstream.get("user") or "postgres")
    target = " ".join(
        f"{key}={_quoted(str(upstream[key]))}"
        for key in ("host", "port", "user", "password")
        if upstream.get(key)
    )
    connect_query = _quoted(f"SET statement_timeout = {statement_timeout_ms}")
    directory.mkdir(parents=True, exist_ok=True)
    # Clients only come from this machine's loopback; trust, with the user listed.
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""\
; Rendered by `shelfwise cluster` (src/shelfwise/cluster/pgbouncer.py). Do not edit.
[databases]
* = {target} connect_query={connect_query}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
pool_mode = transaction
default_pool_size = {sizes.pool}
max_client_conn = {sizes.clients}
; Fail fast while PostgreSQL is away instead of queueing clients for two minutes. After
; a failed server login, new queries fail at once for server_login_retry; a query already
; queued when PostgreSQL went away waits query_wait_timeout. 3 s keeps a request's worst
; case (the app's 30 s deadline + this wait) under nginx's 35 s read timeout (decision 0015).
server_connect_timeout = 3
server_login_retry = 1
query_wait_timeout = 3
; psycopg sends none of these, other drivers do; harmless to ignore.
ignore_startup_parameters = extra_float_digits
"""
    )
    return ini


def pooled_url(upstream_url: str, port: int) -> str:
    """The DSN of `upstream_url`'s database through pgbouncer on 127.0.0.1:`port`."""
    upstream = conninfo_to_dict(libpq_url(upstream_url))
    user = quote(str(upstream.get("user") or "postgres"), safe="")
    dbname = quote(str(upstream.get("dbname") or "postgres"), safe="")
    return f"postgresql://{user}@127.0.0.1:{port}/{dbname}"
