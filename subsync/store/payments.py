"""The `payments` table: the ledger, one row per payment fact (subsync.ledger names the facts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import psycopg

from subsync.ledger import PaymentFact

LedgerSource = Literal["webhook", "reconcile"]


def record_payment(
    conn: psycopg.Connection[Any],
    fact: PaymentFact,
    event_id: str | None,
    *,
    source: LedgerSource = "webhook",
    source_id: str | None = None,
) -> bool:
    """Add a ledger row unless the fact is recorded already. True if added.

    A row from an event names it (`event_id`); one the reconciliation
    finds implied by Stripe's objects has none, and names its run.
    """
    row = conn.execute(
        """
        INSERT INTO payments (stripe_event_id, fact_key, customer_id, subscription_id, invoice_id,
                              checkout_session_id, amount, currency, status, occurred_at, account,
                              source, source_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        RETURNING 1
        """,
        (
            event_id,
            fact.fact_key,
            fact.customer_id,
            fact.subscription_id,
            fact.invoice_id,
            fact.checkout_session_id,
            fact.amount,
            fact.currency,
            fact.status,
            fact.occurred_at,
            fact.account,
            source,
            source_id,
        ),
    ).fetchone()
    return row is not None


def recorded_fact_keys(conn: psycopg.Connection[Any], fact_keys: Sequence[str]) -> set[str]:
    """Which of these facts the ledger holds already."""
    rows = conn.execute("SELECT fact_key FROM payments WHERE fact_key = ANY(%s)", (list(fact_keys),)).fetchall()
    return {r["fact_key"] for r in rows}
