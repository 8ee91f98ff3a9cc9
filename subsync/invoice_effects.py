"""An invoice snapshot applied, and what it changes beyond its own row: one path for the worker and the reconciliation.

* a suspended subscription's owed amount is priced on its unpaid invoice:
  the invoice may arrive after the subscription ended, so it is repriced;
* a paid invoice of a subscription a reactivation made settles what the
  old one owed (subsync.reactivate.settle).

The caller holds the invoice's locks (subsync.store.locks.invoice_keys), in a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from subsync.reactivate import settle
from subsync.store import invoices, subscriptions
from subsync.store.subscriptions import Source
from subsync.stripe_objects import InvoiceSnapshot


def apply_invoices(
    conn: psycopg.Connection[Any],
    snapshots: Sequence[tuple[InvoiceSnapshot, datetime]],
    *,
    now: datetime,
    grace: timedelta,
    source: Source,
    source_id: str | None = None,
    source_ids: Sequence[str | None] | None = None,
) -> list[bool]:
    """Apply each snapshot unless we hold a newer one, and its effects; for each, True if its row was written.

    `source_ids`: each snapshot's own source id (the worker's, its event's)
    for the audit rows its effects write, instead of `source_id` for all.
    """
    named = [source_id] * len(snapshots) if source_ids is None else list(source_ids)
    applied = []
    written_rows = invoices.apply_invoice_snapshots(conn, snapshots)
    for (snapshot, _), written, snapshot_source_id in zip(snapshots, written_rows, named, strict=True):
        applied.append(written is not None)
        if written is None or snapshot.subscription_id is None:
            continue
        if written.subscription_suspended:
            subscriptions.reprice_owed_amount(
                conn, snapshot.subscription_id, now=now, grace=grace, source=source, source_id=snapshot_source_id
            )
        if written.settles_reactivation:
            settle(conn, snapshot.subscription_id, snapshot.id)
    return applied
