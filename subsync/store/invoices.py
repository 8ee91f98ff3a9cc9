"""The `invoices` table: one row per Stripe invoice, the newest snapshot applied.

Callers hold the invoice's subscription lock (subsync.store.locks) and are
inside a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg

from subsync.access import Access
from subsync.db import Query, RowsStatement, execute_rows, fetch_together, id_match
from subsync.store import reactivations
from subsync.stripe_objects import InvoiceSnapshot
from subsync.transitions import UNPAID_INVOICE_STATUSES, InvoiceState, next_invoice_state, unpaid_invoice_for_owed

INVOICE_COLUMNS = tuple(f.name for f in fields(InvoiceState))
_SELECT = f"SELECT {', '.join(INVOICE_COLUMNS)} FROM invoices"  # noqa: S608 - fixed names


def load_invoices(conn: psycopg.Connection[Any], invoice_ids: Sequence[str]) -> dict[str, InvoiceState]:
    """These invoices as stored (no lock: for comparing)."""
    where, param, prepare = id_match("id", invoice_ids)
    rows = conn.execute(f"{_SELECT} WHERE {where}", (param,), prepare=prepare).fetchall()
    return {row["id"]: InvoiceState.from_row(row) for row in rows}


def subscriptions_of(conn: psycopg.Connection[Any], invoice_ids: Sequence[str]) -> dict[str, str | None]:
    """The subscription of each of these invoices we hold (None: an invoice of no subscription)."""
    rows = conn.execute("SELECT id, subscription_id FROM invoices WHERE id = ANY(%s)", (list(invoice_ids),)).fetchall()
    return {row["id"]: row["subscription_id"] for row in rows}


def unfinished_created_before(conn: psycopg.Connection[Any], cutoff: datetime, *, account: str | None) -> list[str]:
    """Ids of our `draft` and `open` invoices of `account` created before `cutoff` (or when unknown), by id."""
    rows = conn.execute(
        "SELECT id FROM invoices WHERE status IN ('draft', 'open') AND account IS NOT DISTINCT FROM %s"
        " AND (created_at < %s OR created_at IS NULL) ORDER BY id",
        (account, cutoff),
    ).fetchall()
    return [r["id"] for r in rows]


def unpaid_invoices(conn: psycopg.Connection[Any], subscription_ids: Sequence[str]) -> dict[str, InvoiceState]:
    """Each subscription's invoice that owed_amount is priced on (`transitions.unpaid_invoice_for_owed`).

    The rows read are the subscriptions' unpaid invoices only, a handful at
    most, and whether a reactivation has settled them; the rule that picks
    one of them is the tested pure function.
    """
    [rows] = fetch_together(conn, [unpaid_invoices_query(subscription_ids)])
    return unpaid_invoices_from(conn, rows)


def unpaid_invoices_query(subscription_ids: Sequence[str]) -> Query:
    """`unpaid_invoices`'s read, to send with others (`db.fetch_together`); `unpaid_invoices_from` its rows."""
    where, param, prepare = id_match("subscription_id", subscription_ids)
    return Query(f"{_SELECT} WHERE {where} AND status = ANY(%s)", (param, sorted(UNPAID_INVOICE_STATUSES)), prepare)


def unpaid_invoices_from(conn: psycopg.Connection[Any], rows: Sequence[dict[str, Any]]) -> dict[str, InvoiceState]:
    invoices = [InvoiceState.from_row(row) for row in rows]
    owing = sorted({inv.subscription_id for inv in invoices if inv.subscription_id is not None})
    # Read only when some invoice is unpaid: on the worker's path there rarely is one.
    settled = reactivations.settled_among(conn, owing) if owing else set()
    chosen = {}
    for sub_id in owing:
        invoice = unpaid_invoice_for_owed(invoices, sub_id, settled=sub_id in settled)
        if invoice is not None:
            chosen[sub_id] = invoice
    return chosen


def first_paid_invoice(conn: psycopg.Connection[Any], subscription_id: str) -> str | None:
    """The id of the first paid invoice of `subscription_id` we hold, if any."""
    row = conn.execute(
        "SELECT id FROM invoices WHERE subscription_id = %s AND status = 'paid' ORDER BY created_at, id LIMIT 1",
        (subscription_id,),
    ).fetchone()
    return None if row is None else str(row["id"])


def unpaid_invoice(conn: psycopg.Connection[Any], subscription_id: str) -> InvoiceState | None:
    return unpaid_invoices(conn, [subscription_id]).get(subscription_id)


_UPSERT_INVOICE = RowsStatement(
    head=f"INSERT INTO invoices ({', '.join(INVOICE_COLUMNS)}, updated_at) VALUES",
    row=f"({', '.join(['{}'] * len(INVOICE_COLUMNS))}, now())",
    tail="ON CONFLICT (id) DO UPDATE SET "  # noqa: S608 - fixed names
    + ", ".join([*(f"{c} = EXCLUDED.{c}" for c in INVOICE_COLUMNS if c != "id"), "updated_at = now()"])
    # Read in the same statement: the subscription's access (only a suspended
    # one is repriced), and whether a reactivation waits for its payment.
    + " RETURNING id, (SELECT s.access FROM subscriptions AS s WHERE s.id = invoices.subscription_id) AS access,"
    " EXISTS (SELECT 1 FROM reactivations AS r"
    "  WHERE r.new_subscription_id = invoices.subscription_id AND r.status = 'created') AS reactivating",
)


@dataclass(frozen=True)
class InvoiceWritten:
    """An invoice row written: whether its subscription is suspended (the one state priced on
    invoices), and whether this write paid for a reactivation waiting for it."""

    subscription_suspended: bool
    settles_reactivation: bool = False


def apply_invoice_snapshots(
    conn: psycopg.Connection[Any], snapshots: Sequence[tuple[InvoiceSnapshot, datetime]]
) -> list[InvoiceWritten | None]:
    """Upsert each invoice unless we hold a newer snapshot (or the same), in one statement; for each, what was written.

    None for a snapshot that wrote nothing. Several snapshots of one invoice
    are applied in order, its row written once. The upsert also reads each
    invoice's subscription's access, so that the caller reprices only a
    suspended subscription without reading it again.
    """
    current = _load_for_update(conn, sorted({snapshot.id for snapshot, _ in snapshots}))
    changes: list[tuple[str, InvoiceState | None, InvoiceState] | None] = []
    written: dict[str, InvoiceState] = {}
    for snapshot, seen_at in snapshots:
        before = current.get(snapshot.id)
        after = next_invoice_state(before, snapshot, seen_at)
        if after is None or after == before:
            changes.append(None)
            continue
        current[snapshot.id] = written[snapshot.id] = after
        changes.append((snapshot.id, before, after))
    rows = [tuple(getattr(after, column) for column in INVOICE_COLUMNS) for after in written.values()]
    read = {
        invoice_id: (access, reactivating)
        for invoice_id, access, reactivating in execute_rows(conn, _UPSERT_INVOICE, rows)
    }
    results: list[InvoiceWritten | None] = []
    for change in changes:
        if change is None:
            results.append(None)
            continue
        invoice_id, before, after = change
        access, reactivating = read.get(invoice_id, (None, False))
        became_paid = after.status == "paid" and (before is None or before.status != "paid")
        results.append(
            InvoiceWritten(
                subscription_suspended=access == Access.SUSPENDED.value,
                settles_reactivation=became_paid and bool(reactivating),
            )
        )
    return results


def _load_for_update(conn: psycopg.Connection[Any], invoice_ids: Sequence[str]) -> dict[str, InvoiceState]:
    if not invoice_ids:
        return {}
    where, param, prepare = id_match("id", invoice_ids)
    rows = conn.execute(f"{_SELECT} WHERE {where} ORDER BY id FOR UPDATE", (param,), prepare=prepare).fetchall()
    return {row["id"]: InvoiceState.from_row(row) for row in rows}
