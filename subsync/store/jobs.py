"""Scheduling and runs: `reconciliation_runs`, `job_state`, `job_runs`, and the jobs' advisory locks.

Several scheduler processes may run (on several machines). A job guarded by
`exclusive` runs in one of them at a time and the others skip that tick;
`claim_tick` stops a second scheduler whose clock is a little late from
running the same tick again after the first finished.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

Job = Literal["outbox_sweep", "access_refresh", "reconcile", "backfill"]
# One key per job; the values only need to be distinct within this database.
LOCK_KEYS: dict[Job, int] = {
    "outbox_sweep": 0x5B5C_0101,
    "access_refresh": 0x5B5C_0102,
    "reconcile": 0x5B5C_0103,
    "backfill": 0x5B5C_0104,
}
RunStatus = Literal["running", "succeeded", "failed"]
# The figures a run counts, as columns of reconciliation_runs.
RUN_FIGURES = (
    "scanned",
    "drifted",
    "fixed",
    "created",
    "missing_in_stripe",
    "left_alone_newer",
    "terminal_here",
    "invoices_scanned",
    "invoices_drifted",
    "invoices_fixed",
    "invoices_missing",
    "ledger_added",
    "entitlements_scanned",
    "entitlements_drifted",
    "entitlements_fixed",
    "entitlements_skipped",
    "refunds_scanned",
    "ledger_refunds_added",
    "disputes_scanned",
    "ledger_disputes_added",
    "accounts_failed",
)


@contextmanager
def exclusive(pool: ConnectionPool[Any], job: Job) -> Iterator[bool]:
    """Hold the job's session-level lock while the block runs; yields False if taken.

    Session-level (not transaction-level) because jobs commit as they go. The
    lock dies with the connection, so a scheduler killed -9 never leaves it
    held.
    """
    key = LOCK_KEYS[job]
    with pool.connection() as conn:
        conn.autocommit = True
        row = conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (key,)).fetchone()
        got = bool(row and row["got"])
        try:
            yield got
        finally:
            if got:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            conn.autocommit = False


def claim_tick(conn: psycopg.Connection[Any], job: Job, tick: datetime) -> bool:
    """True for the first scheduler to claim this job's tick; False for any other."""
    row = conn.execute(
        "INSERT INTO job_runs (job, scheduled_for) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (job, tick),
    ).fetchone()
    return row is not None


def state(conn: psycopg.Connection[Any], name: str) -> dict[str, Any] | None:
    """A job's small durable state (e.g. the backfill checkpoint), or None."""
    row = conn.execute("SELECT value FROM job_state WHERE name = %s", (name,)).fetchone()
    return None if row is None else dict(row["value"])


def advance_checkpoint(conn: psycopg.Connection[Any], name: str, key: str, value: int) -> None:
    """Store `{key: value}` as the job's state, unless the stored value is already higher (it only moves forward)."""
    conn.execute(
        """INSERT INTO job_state (name, value) VALUES (%(name)s, %(value)s)
           ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
           WHERE (job_state.value->>%(key)s)::bigint < (EXCLUDED.value->>%(key)s)::bigint""",
        {"name": name, "value": Jsonb({key: value}), "key": key},
    )


def start_reconciliation(conn: psycopg.Connection[Any], *, dry_run: bool) -> int:
    """Record a new run; a run still `running` is one whose process died (the caller holds the lock)."""
    conn.execute(
        "UPDATE reconciliation_runs SET status = 'failed', finished_at = now(),"
        " error = 'interrupted: the process running it died' WHERE status = 'running'"
    )
    row = conn.execute("INSERT INTO reconciliation_runs (dry_run) VALUES (%s) RETURNING id", (dry_run,)).fetchone()
    assert row is not None
    return int(row["id"])


def finish_reconciliation(
    conn: psycopg.Connection[Any],
    run_id: int,
    status: RunStatus,
    figures: Mapping[str, int],
    error: str | None,
    *,
    accounts: Mapping[str, Any] | None = None,
) -> None:
    """Record a run's end: its totals as columns, each account's figures in `accounts`."""
    conn.execute(
        f"UPDATE reconciliation_runs SET finished_at = now(), status = %s, error = %s, accounts = %s,"  # noqa: S608
        f" {', '.join(f'{name} = %s' for name in RUN_FIGURES)} WHERE id = %s",
        (status, error, Jsonb(dict(accounts or {})), *(figures[name] for name in RUN_FIGURES), run_id),
    )


def latest_reconciliation(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    """The newest reconciliation run, with the finish time of the newest real (not dry) success."""
    return conn.execute(
        """
        SELECT r.*, (SELECT max(finished_at) FROM reconciliation_runs
                      WHERE status = 'succeeded' AND NOT dry_run) AS last_success_at
          FROM reconciliation_runs r ORDER BY r.id DESC LIMIT 1
        """
    ).fetchone()
