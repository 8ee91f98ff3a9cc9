"""invoice.* events: the invoices' snapshots and their effects (subsync.invoice_effects), and their ledger rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from subsync import event_types
from subsync.invoice_effects import apply_invoices
from subsync.store.events import Outcome
from subsync.stripe_objects import parse_invoice
from worker.handlers.context import Context, shared
from worker.handlers.ledger import record_ledger_facts


def handle_invoice_events(conn: psycopg.Connection[Any], batch: Sequence[Context]) -> list[Outcome]:
    # invoice.upcoming is a preview with no id: nothing to store.
    stored = [ctx for ctx in batch if not event_types.is_preview(ctx.event_type)]
    if stored:
        now, grace, source = shared(stored)
        apply_invoices(
            conn,
            [(parse_invoice(ctx.obj, account=ctx.account), ctx.created) for ctx in stored],
            now=now,
            grace=grace,
            source=source,
            source_ids=[ctx.event_id for ctx in stored],
        )
        record_ledger_facts(conn, stored)
    return ["processed"] * len(batch)
