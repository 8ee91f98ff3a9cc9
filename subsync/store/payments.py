"""The `payments` table: the ledger, one row per payment fact (subsync.ledger names the facts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import psycopg

from subsync.db import RowsStatement, execute_rows
from subsync.ledger import PaymentFact

LedgerSource = Literal["webhook", "reconcile"]


_INSERT = RowsStatement(
    head="INSERT INTO payments (stripe_event_id, fact_key, customer_id, subscription_id, invoice_id,"
    " checkout_session_id, amount, currency, status, occurred_at, account, source, source_id) VALUES",
    row="({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
    tail="ON CONFLICT DO NOTHING RETURNING fact_key",
)


def record_payments(
    conn: psycopg.Connection[Any],
    facts: Sequence[tuple[PaymentFact, str | None]],
    *,
    source: LedgerSource = "webhook",
    source_id: str | None = None,
) -> set[str]:
    """Add a ledger row for each fact not recorded already, in one statement; the fact keys added.

    Each fact comes with the event that states it, which its row names; one
    the reconciliation finds implied by Stripe's objects has none, and names
    its run. Of facts given twice the first is recorded.
    """
    rows = [
        (
            *(event_id, f.fact_key, f.customer_id, f.subscription_id, f.invoice_id, f.checkout_session_id),
            *(f.amount, f.currency, f.status, f.occurred_at, f.account, source, source_id),
        )
        for f, event_id in facts
    ]
    return {fact_key for (fact_key,) in execute_rows(conn, _INSERT, rows)}


def recorded_fact_keys(conn: psycopg.Connection[Any], fact_keys: Sequence[str]) -> set[str]:
    """Which of these facts the ledger holds already."""
    rows = conn.execute("SELECT fact_key FROM payments WHERE fact_key = ANY(%s)", (list(fact_keys),)).fetchall()
    return {r["fact_key"] for r in rows}
