"""The ledger row an event states, if any: one place for every handler that records payments."""

from __future__ import annotations

from typing import Any

import psycopg

from subsync import event_types
from subsync.ledger import facts_implied_by_invoice, ledger_fact
from subsync.store import payments
from worker.handlers.context import Context


def record_ledger_fact(conn: psycopg.Connection[Any], ctx: Context) -> None:
    """The fact the event states; for an invoice fetched for a thin event, every fact its state implies.

    A fetched invoice is its state now: a failed attempt the event told of
    may have been followed by others, or by the payment. Its state implies
    them all, under the same keys the events would give them.
    """
    stated = ledger_fact(ctx.event_type, ctx.obj, ctx.created, account=ctx.account)
    facts = [] if stated is None else [stated]
    if ctx.fetched and event_types.kind_of(ctx.event_type) == "invoice":
        facts = facts_implied_by_invoice(ctx.obj, ctx.created, account=ctx.account)
    for fact in facts:
        # One row per event names it (stripe_event_id is unique): the fact it states.
        named = stated is not None and fact.fact_key == stated.fact_key
        payments.record_payment(conn, fact, ctx.event_id if named else None)
