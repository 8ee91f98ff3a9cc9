"""The PostgreSQL connection pool of this process, and the schema.

psycopg connections are not fork-safe, so every entry point opens the pool
after its process starts: `create_app()` (granian builds the app in each
worker process), the Dramatiq middleware's `after_process_boot`, the scheduler's
main. Everything else asks `pool()` for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"
# One key for `db init`, so two deploys applying the schema at once take turns.
SCHEMA_LOCK_KEY = 0x5B5C_0001
# How long a request waits for a connection before it answers 503: short,
# because Stripe's own timeout is short and it retries anyway.
CONNECT_TIMEOUT_S = 3.0

T = TypeVar("T")
_pool: ConnectionPool | None = None


def open_pool(
    url: str,
    *,
    max_size: int = 8,
    name: str = "subsync",
    timeout: float = CONNECT_TIMEOUT_S,
    server_settings: dict[str, str] | None = None,
    check: bool = True,
    autocommit: bool = False,
) -> ConnectionPool:
    """Open (or return) this process's pool. Rows come back as dicts.

    `server_settings` are PostgreSQL settings for every connection of the
    pool (libpq `options`), set once at connect instead of per transaction.
    `check` tests each connection before lending it, so that one the server
    dropped (restart, pg_terminate_backend) is replaced instead of failing its
    next user; it costs a round trip per checkout. A pool without it runs
    its work through `run()`, which finds a dropped connection at first use.
    `autocommit` connections run each statement on its own unless in
    `conn.transaction()`: for code that does all its work in those (the
    worker), it spares switching modes around a one-statement commit.
    """
    global _pool  # noqa: PLW0603 - one pool per process, by design
    if _pool is not None and _pool.conninfo != url:
        close_pool()  # a different database (tests): never hand out the wrong one
    if _pool is None:
        _pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            name=name,
            timeout=timeout,
            open=False,
            kwargs={
                "row_factory": dict_row,
                "autocommit": autocommit,
                "connect_timeout": int(CONNECT_TIMEOUT_S),
                **({"options": " ".join(f"-c {k}={v}" for k, v in server_settings.items())} if server_settings else {}),
            },
            check=ConnectionPool.check_connection if check else None,
        )
        # Do not wait for the first connection: a web process must start (and
        # answer 503) while PostgreSQL is down.
        _pool.open(wait=False)
    return _pool


def pool() -> ConnectionPool:
    if _pool is None:
        msg = "the database pool is not open in this process (call subsync.db.open_pool first)"
        raise RuntimeError(msg)
    return _pool


def run(the_pool: ConnectionPool, work: Callable[[psycopg.Connection[Any]], T], *, timeout: float | None = None) -> T:
    """`work(conn)` on a pooled connection; once more on another if that one was dropped.

    For a pool opened with check=False: a connection the server dropped while
    it sat in the pool (restart, pg_terminate_backend, failover) fails at its
    first use. Then every idle connection is tested (the others are likely
    dropped too) and `work` runs once more. `work` must be safe to run twice:
    the first run may have committed just before the connection broke.
    """
    used: psycopg.Connection[Any] | None = None
    try:
        with the_pool.connection(timeout=timeout) as conn:
            used = conn
            return work(conn)
    except psycopg.OperationalError:
        if used is None or not used.broken:
            raise  # no connection to be had (PoolTimeout), or the statement failed: not a dropped connection
    the_pool.check()
    with the_pool.connection(timeout=timeout) as conn:
        return work(conn)


def close_pool() -> None:
    global _pool  # noqa: PLW0603
    if _pool is not None:
        _pool.close()
        _pool = None


def apply_schema(url: str) -> None:
    """Apply schema.sql; idempotent and safe when two deploys run it at once."""
    sql = SQL(SCHEMA_PATH.read_text())  # a trusted file of the repository, not input
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute(sql)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))


def id_match(column: str, ids: Sequence[str]) -> tuple[str, Any, bool | None]:
    """A WHERE clause for rows whose `column` is among `ids`: (clause, its parameter, `prepare=`).

    psycopg prepares a statement run 5 times, and PostgreSQL may then keep one
    generic plan for it, made from the table's size at the time. `= ANY($1)`
    planned while a table is nearly empty stays a sequential scan, comparing
    each row with every element, however large the table grows until
    autovacuum's ANALYZE replans it: a first reconciliation into an empty
    table grows quadratic that way. One id is `= $1`, an index scan in any
    plan; several are planned each time with the array's values (a hashed
    lookup, or the index once the table is large), a planning cost far below
    a scan.
    """
    if len(ids) == 1:
        return f"{column} = %s", ids[0], None
    return f"{column} = ANY(%s)", list(ids), False


@dataclass(frozen=True)
class Query:
    """One SELECT to send: its text, its parameters, and `prepare=` (see `id_match`)."""

    sql: str
    params: Sequence[Any]
    prepare: bool | None = None


def fetch_together(conn: psycopg.Connection[Any], queries: Sequence[Query]) -> list[list[dict[str, Any]]]:
    """The rows of each query, sent at once in one pipeline: one round trip however many there are."""
    if len(queries) == 1:
        q = queries[0]
        return [conn.execute(q.sql, q.params, prepare=q.prepare).fetchall()]
    with conn.pipeline():
        cursors = [conn.execute(q.sql, q.params, prepare=q.prepare) for q in queries]
    return [cursor.fetchall() for cursor in cursors]


# PostgreSQL's limit on the parameters of one statement.
MAX_PARAMS = 65535


@dataclass(frozen=True)
class RowsStatement:
    """A statement over many rows at once: `head`, then `row` once per row, comma-separated, then `tail`.

    `row` holds a `{}` where each of a row's parameters goes, e.g.
    "({}, {}, now())". One statement of many rows costs PostgreSQL and
    psycopg far less than one statement per row (executemany), even in a
    pipeline.
    """

    head: str  # up to VALUES
    row: str
    tail: str = ""

    @property
    def params_per_row(self) -> int:
        return self.row.count("{}")

    @property
    def returns(self) -> bool:
        return "RETURNING" in self.tail


@functools.lru_cache(maxsize=256)
def _rows_sql(statement: RowsStatement, rows: int) -> str:
    # $n placeholders, sent as they are (psycopg's RawCursor): psycopg parses
    # and caches a statement with %s placeholders only while it is short.
    n = statement.params_per_row
    values = ", ".join(
        statement.row.format(*(f"${i}" for i in range(first + 1, first + n + 1))) for first in range(0, rows * n, n)
    )
    return f"{statement.head} {values} {statement.tail}"


def execute_rows(
    conn: psycopg.Connection[Any], statement: RowsStatement, rows: Sequence[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """Run `statement` over `rows`, as many to a statement as PostgreSQL takes; the rows it returns, in order."""
    returned: list[tuple[Any, ...]] = []
    per_statement = MAX_PARAMS // statement.params_per_row
    with psycopg.RawCursor(conn, row_factory=tuple_row) as cur:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cur.execute(_rows_sql(statement, len(chunk)), [value for row in chunk for value in row])
            if statement.returns:  # in a pipeline too: fetching waits for the result
                returned.extend(cur.fetchall())
    return returned


def analyze(conn: psycopg.Connection[Any], tables: Sequence[str]) -> None:
    """ANALYZE `tables` (names from the code, never from input): fresh statistics and plans for them."""
    for table in tables:
        conn.execute(SQL("ANALYZE {}").format(Identifier(table)))
    if not conn.autocommit:
        conn.commit()
