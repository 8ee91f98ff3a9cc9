"""A reconciliation that fills tables is a bulk load: statistics must keep up with it.

A first run (or a new connected account) writes its rows faster than
PostgreSQL's statistics follow, and where autovacuum is late or off the
planner keeps the plans it made for a table of a few rows: a scan of the
whole table per statement, quadratic in the rows written. PostgreSQL's
advice for a bulk load is to ANALYZE after it; here, each time the rows a
run has written double, which keeps the plans right at a logarithmic cost
(ANALYZE also replaces the cached plans of the tables it reads).
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from subsync import db

# Below this many rows written the statistics of an empty table are good enough.
FIRST_ANALYZE_AT = 1000


class BulkWrites:
    """Counts what one run writes and analyzes `tables` each time that count doubles."""

    def __init__(self, pool: ConnectionPool[Any], tables: tuple[str, ...]) -> None:
        self.pool = pool
        self.tables = tables
        self.written = 0
        self.analyzes = 0
        self._next_at = FIRST_ANALYZE_AT

    def wrote(self, rows: int) -> None:
        self.written += rows
        if self.written < self._next_at:
            return
        with self.pool.connection() as conn:
            db.analyze(conn, self.tables)
        self.analyzes += 1
        self._next_at = 2 * self.written
