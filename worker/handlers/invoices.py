"""invoice.* events: the invoice's snapshot and its effects (subsync.invoice_effects), and its ledger row."""

from __future__ import annotations

from typing import Any

import psycopg

from subsync import event_types
from subsync.invoice_effects import apply_invoice
from subsync.store.events import Outcome
from subsync.stripe_objects import parse_invoice
from worker.handlers.context import Context
from worker.handlers.ledger import record_ledger_fact


def handle_invoice_event(conn: psycopg.Connection[Any], ctx: Context) -> Outcome:
    if event_types.is_preview(ctx.event_type):
        # invoice.upcoming is a preview with no id: nothing to store.
        return "processed"
    snapshot = parse_invoice(ctx.obj, account=ctx.account)
    apply_invoice(conn, snapshot, ctx.created, now=ctx.now, grace=ctx.grace, source=ctx.source, source_id=ctx.event_id)
    record_ledger_fact(conn, ctx)
    return "processed"
