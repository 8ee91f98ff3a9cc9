"""Refund and dispute events: the ledger rows they state (subsync.reversals), one per fact."""

from __future__ import annotations

from typing import Any

import psycopg

from subsync.reversals import reversal_facts, stated_key
from subsync.store import payments
from subsync.store.events import Outcome
from worker.handlers.context import Context


def handle_money_event(conn: psycopg.Connection[Any], ctx: Context) -> Outcome:
    """Record each fact the event states; a fact recorded already (any event, any order) is left as it is."""
    named = stated_key(ctx.event_type, ctx.obj)
    for fact in reversal_facts(ctx.event_type, ctx.obj, ctx.created, ctx.links, account=ctx.account):
        # One row per event names it (stripe_event_id is unique): the fact it states.
        payments.record_payment(conn, fact, ctx.event_id if fact.fact_key == named else None)
    return "processed"
