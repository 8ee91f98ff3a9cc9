"""Refund and dispute events: the ledger rows they state (subsync.reversals), one per fact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from subsync.ledger import PaymentFact
from subsync.reversals import reversal_facts, stated_key
from subsync.store import payments
from subsync.store.events import Outcome
from worker.handlers.context import Context


def handle_money_events(conn: psycopg.Connection[Any], batch: Sequence[Context]) -> list[Outcome]:
    """Record each fact the events state; a fact recorded already (any event, any order) is left as it is."""
    facts: list[tuple[PaymentFact, str | None]] = []
    for ctx in batch:
        named = stated_key(ctx.event_type, ctx.obj)
        for fact in reversal_facts(ctx.event_type, ctx.obj, ctx.created, ctx.links, account=ctx.account):
            # One row per event names it (stripe_event_id is unique): the fact it states.
            facts.append((fact, ctx.event_id if fact.fact_key == named else None))
    payments.record_payments(conn, facts)
    return ["processed"] * len(batch)
