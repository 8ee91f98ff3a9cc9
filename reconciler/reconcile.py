"""The full reconciliation: Stripe's subscriptions against ours, drift repaired.

Streaming: subscriptions come a page (100) at a time and each page is
compared and repaired while the next one is fetched (reconciler/readahead.py,
one page ahead), so memory stays flat however many there are. The ids Stripe
listed go to a temporary table on the run's own connection, which is how
rows we have and Stripe lacks are found at the end without holding every id
in Python.

Repairs go through `store.apply_subscription_snapshot`, the worker's own
path: access, owed amount, the audit trail (source 'reconcile', source id
the run id) and NOTIFY follow. A snapshot is stamped with the `Date` of the
page that carried it, so a webhook applied after the page was fetched is
newer and is left alone.

One run at a time across every process and machine (advisory lock). A run
that dies stays 'running' in reconciliation_runs until the next run, holding
the lock, marks it failed ('interrupted') and starts cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from reconciler.locks import exclusive
from reconciler.readahead import read_ahead
from reconciler.stripe_api import Snapshot, StripeApi
from subsync import logs, store
from subsync.stripe_objects import SubscriptionSnapshot, parse_subscription

log = logs.get_logger(__name__)

# The columns compared with Stripe (issue 5); others follow on any repair.
COMPARED = (
    "status",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "cancel_at",
    "canceled_at",
    "ended_at",
    "trial_end",
)
# How many changes a report lists; the counts are always complete.
MAX_LISTED = 1000


class AlreadyRunning(Exception):
    """Another reconciliation holds the lock."""


@dataclass
class Report:
    run_id: int | None = None
    dry_run: bool = False
    status: str = "running"
    scanned: int = 0
    drifted: int = 0
    fixed: int = 0
    created: int = 0
    missing_in_stripe: int = 0
    left_alone_newer: int = 0
    error: str | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def drift(ours: dict[str, Any] | None, theirs: SubscriptionSnapshot) -> dict[str, list[Any]]:
    """The compared columns that differ: {column: [ours, Stripe's]} (JSON-ready)."""
    out: dict[str, list[Any]] = {}
    for column in COMPARED:
        mine = None if ours is None else ours[column]
        stripe_value = getattr(theirs, column)
        if mine != stripe_value:
            out[column] = [_json(mine), _json(stripe_value)]
    return out


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _start(conn: psycopg.Connection[Any], dry_run: bool) -> int:
    conn.execute(
        "UPDATE reconciliation_runs SET status = 'failed', finished_at = now(),"
        " error = 'interrupted: the process running it died' WHERE status = 'running'"
    )
    return conn.execute("INSERT INTO reconciliation_runs (dry_run) VALUES (%s) RETURNING id", (dry_run,)).fetchone()[
        "id"
    ]


def _finish(conn: psycopg.Connection[Any], report: Report) -> None:
    conn.execute(
        """UPDATE reconciliation_runs
              SET finished_at = now(), status = %s, scanned = %s, drifted = %s, fixed = %s,
                  created = %s, missing_in_stripe = %s, error = %s
            WHERE id = %s""",
        (
            report.status,
            report.scanned,
            report.drifted,
            report.fixed,
            report.created,
            report.missing_in_stripe,
            report.error,
            report.run_id,
        ),
    )


def _reconcile_page(
    pool: ConnectionPool[Any],
    page: list[Snapshot],
    report: Report,
    *,
    grace: timedelta,
    now: datetime,
) -> None:
    parsed = [(parse_subscription(s.data), s.seen_at) for s in page]
    ids = [p.id for p, _ in parsed]
    with pool.connection() as conn:
        cols = ", ".join(("id", *COMPARED))
        where, param, prepare = store.id_match("id", ids)
        ours = {
            r["id"]: r
            for r in conn.execute(
                f"SELECT {cols} FROM subscriptions WHERE {where}",  # noqa: S608 - fixed names
                (param,),
                prepare=prepare,
            )
        }
        to_apply: list[tuple[SubscriptionSnapshot, datetime]] = []
        for snapshot, seen_at in parsed:
            report.scanned += 1
            mine = ours.get(snapshot.id)
            diff = drift(mine, snapshot)
            if not diff:
                continue
            if mine is None:
                report.created += 1
            else:
                report.drifted += 1
            if len(report.changes) < MAX_LISTED:
                report.changes.append({"subscription_id": snapshot.id, "new": mine is None, "changes": diff})
            to_apply.append((snapshot, seen_at))
        if report.dry_run or not to_apply:
            return
        with conn.transaction():
            applied = store.apply_subscription_snapshots(
                conn, to_apply, now=now, grace=grace, source="reconcile", source_id=str(report.run_id)
            )
        for (snapshot, _), result in zip(to_apply, applied, strict=True):
            if result.stale:
                report.left_alone_newer += 1
            elif snapshot.id in ours and result.changed:
                report.fixed += 1


def run(
    pool: ConnectionPool[Any],
    api: StripeApi,
    *,
    grace: timedelta,
    dry_run: bool = False,
) -> Report:
    """One full reconciliation. Raises AlreadyRunning, or the Stripe/DB error that failed it."""
    report = Report(dry_run=dry_run)
    with exclusive(pool, "reconcile") as got:
        if not got:
            msg = "another reconciliation is running"
            raise AlreadyRunning(msg)
        with pool.connection() as conn:
            report.run_id = _start(conn, dry_run)
        log.info("reconcile_started", run_id=report.run_id, dry_run=dry_run)
        try:
            with pool.connection() as seen_conn:
                seen_conn.execute("CREATE TEMP TABLE IF NOT EXISTS reconcile_seen (id text NOT NULL)")
                seen_conn.execute("TRUNCATE reconcile_seen")
                for page in read_ahead(api.subscription_pages(), name="reconcile-pages"):
                    _record_seen(seen_conn, page)
                    _reconcile_page(pool, page, report, grace=grace, now=datetime.now(UTC))
                missing = seen_conn.execute(
                    "SELECT s.id FROM subscriptions s"
                    " WHERE NOT EXISTS (SELECT 1 FROM reconcile_seen r WHERE r.id = s.id) ORDER BY s.id"
                )
                for row in missing:
                    report.missing_in_stripe += 1
                    if len(report.missing_ids) < MAX_LISTED:
                        report.missing_ids.append(row["id"])
                seen_conn.execute("DROP TABLE reconcile_seen")
            report.status = "succeeded"
        except Exception as exc:
            report.status = "failed"
            report.error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning("reconcile_failed", run_id=report.run_id, error=report.error)
            raise
        finally:
            with pool.connection() as conn:
                _finish(conn, report)
            log.info(
                "reconcile_finished",
                **{k: v for k, v in report.as_dict().items() if k not in ("changes", "missing_ids")},
            )
    return report


def _record_seen(conn: psycopg.Connection[Any], page: list[Snapshot]) -> None:
    with conn.cursor().copy("COPY reconcile_seen (id) FROM STDIN") as copy:
        for snapshot in page:
            copy.write_row((snapshot.data["id"],))
    conn.commit()
