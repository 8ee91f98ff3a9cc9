"""Cluster-wide exclusion for scheduled jobs: PostgreSQL advisory locks.

Several scheduler processes may run (on several machines); a job guarded
here runs in one of them at a time and the others skip that tick.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg_pool import ConnectionPool

# One key per job; the values only need to be distinct within this database.
LOCK_KEYS = {
    "outbox_sweep": 0x5B5C_0101,
    "access_refresh": 0x5B5C_0102,
    "reconcile": 0x5B5C_0103,
    "backfill": 0x5B5C_0104,
}


@contextmanager
def exclusive(pool: ConnectionPool[Any], job: str) -> Iterator[bool]:
    """Hold the job's session-level lock while the block runs; yields False if taken.

    Session-level (not transaction-level) because jobs commit as they go. The
    lock dies with the connection, so a scheduler killed -9 never leaves it
    held.
    """
    key = LOCK_KEYS[job]
    with pool.connection() as conn:
        conn.autocommit = True
        got = conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (key,)).fetchone()["got"]
        try:
            yield bool(got)
        finally:
            if got:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            conn.autocommit = False
