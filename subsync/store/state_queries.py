"""On-call reads of the state tables: one subscription's row, its audit trail, invoices and ledger rows.

For `subscriptions show` and `events show`; the write paths are in
`subscriptions`, `invoices`, `customers` and `payments`.
"""

from __future__ import annotations

from typing import Any

import psycopg


def subscription_row(conn: psycopg.Connection[Any], subscription_id: str) -> dict[str, Any] | None:
    """Every column of one subscription, as stored."""
    return conn.execute("SELECT * FROM subscriptions WHERE id = %s", (subscription_id,)).fetchone()


def changes_of_subscription(
    conn: psycopg.Connection[Any], subscription_id: str, limit: int | None = None
) -> list[dict[str, Any]]:
    """The audit trail of one subscription, oldest first (the newest `limit` when given)."""
    rows = conn.execute(
        """
        SELECT * FROM (
            SELECT id, subscription_id, changed_at, source, source_id, before, after
              FROM subscription_changes WHERE subscription_id = %s
             ORDER BY changed_at DESC, id DESC LIMIT %s) newest
         ORDER BY changed_at, id
        """,
        (subscription_id, limit),
    ).fetchall()
    return list(rows)


def changes_by_source(conn: psycopg.Connection[Any], source_id: str) -> list[dict[str, Any]]:
    """The audit rows one event (or run) wrote, oldest first."""
    return conn.execute(
        "SELECT id, subscription_id, changed_at, source, source_id, before, after FROM subscription_changes"
        " WHERE source_id = %s ORDER BY changed_at, id",
        (source_id,),
    ).fetchall()


def payments_of_event(conn: psycopg.Connection[Any], event_id: str) -> list[dict[str, Any]]:
    """The ledger row an event recorded, if any."""
    return conn.execute(
        "SELECT id, fact_key, status, amount, currency, customer_id, subscription_id, invoice_id,"
        " checkout_session_id, occurred_at FROM payments WHERE stripe_event_id = %s",
        (event_id,),
    ).fetchall()


def invoices_of_subscription(
    conn: psycopg.Connection[Any], subscription_id: str, limit: int = 5
) -> list[dict[str, Any]]:
    """The newest invoices of a subscription."""
    return conn.execute(
        """SELECT id, status, amount_due, amount_paid, currency, period_start, period_end, attempt_count,
                  next_payment_attempt, created_at, paid_at
             FROM invoices WHERE subscription_id = %s ORDER BY created_at DESC NULLS LAST, id DESC LIMIT %s""",
        (subscription_id, limit),
    ).fetchall()
