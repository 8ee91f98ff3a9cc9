"""The `reactivations` table: each suspended subscription brought back, and how far it got.

Written by the reactivation (subsync.reactivate) and, when the new
subscription's first invoice is paid, by the worker (`settle`). The caller
holds the subscriptions' locks (subsync.store.locks) inside a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

import psycopg

from subsync.db import id_match

ReactivationStatus = Literal["started", "created", "settled"]


@dataclass(frozen=True)
class ReactivationRow:
    subscription_id: str  # the suspended subscription
    customer_id: str
    account: str | None
    owed_amount: int
    currency: str | None
    unpaid_invoice_id: str | None
    description: str
    invoice_item_id: str | None
    new_subscription_id: str | None
    status: ReactivationStatus
    requested_by: str
    requested_at: datetime
    settled_at: datetime | None
    settled_by_invoice_id: str | None


_COLUMNS = tuple(f.name for f in fields(ReactivationRow))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM reactivations"  # noqa: S608 - fixed names


def load(conn: psycopg.Connection[Any], subscription_id: str) -> ReactivationRow | None:
    row = conn.execute(f"{_SELECT} WHERE subscription_id = %s", (subscription_id,)).fetchone()
    return None if row is None else ReactivationRow(**row)


def start(
    conn: psycopg.Connection[Any],
    *,
    subscription_id: str,
    customer_id: str,
    account: str | None,
    owed_amount: int,
    currency: str | None,
    unpaid_invoice_id: str | None,
    description: str,
    requested_by: str,
) -> ReactivationRow:
    """The row of a reactivation asked for; an earlier one that never finished is kept as it is."""
    conn.execute(
        """
        INSERT INTO reactivations (subscription_id, customer_id, account, owed_amount, currency,
                                   unpaid_invoice_id, description, requested_by)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (subscription_id) DO NOTHING
        """,
        (subscription_id, customer_id, account, owed_amount, currency, unpaid_invoice_id, description, requested_by),
    )
    row = load(conn, subscription_id)
    assert row is not None
    return row


def record_invoice_item(conn: psycopg.Connection[Any], subscription_id: str, invoice_item_id: str) -> None:
    conn.execute(
        "UPDATE reactivations SET invoice_item_id = %s WHERE subscription_id = %s",
        (invoice_item_id, subscription_id),
    )


def record_created(conn: psycopg.Connection[Any], subscription_id: str, new_subscription_id: str) -> None:
    conn.execute(
        "UPDATE reactivations SET new_subscription_id = %s, status = 'created'"
        " WHERE subscription_id = %s AND status = 'started'",
        (new_subscription_id, subscription_id),
    )


def settle(conn: psycopg.Connection[Any], new_subscription_id: str, invoice_id: str) -> str | None:
    """Mark settled the reactivation whose new subscription this is; the suspended subscription's id, or None.

    None when no reactivation made this subscription, or it is settled already.
    """
    row = conn.execute(
        "UPDATE reactivations SET status = 'settled', settled_at = now(), settled_by_invoice_id = %s"
        " WHERE new_subscription_id = %s AND status = 'created' RETURNING subscription_id",
        (invoice_id, new_subscription_id),
    ).fetchone()
    return None if row is None else str(row["subscription_id"])


def settled_among(conn: psycopg.Connection[Any], subscription_ids: Sequence[str]) -> set[str]:
    """Which of these (suspended) subscriptions a settled reactivation has paid for."""
    where, param, prepare = id_match("subscription_id", subscription_ids)
    rows = conn.execute(
        f"SELECT subscription_id FROM reactivations WHERE {where} AND status = 'settled'",  # noqa: S608
        (param,),
        prepare=prepare,
    ).fetchall()
    return {r["subscription_id"] for r in rows}
