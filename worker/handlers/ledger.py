"""The ledger rows events state, if any: one place for every handler that records payments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from subsync import event_types
from subsync.ledger import PaymentFact, facts_implied_by_invoice, ledger_fact
from subsync.store import payments
from worker.handlers.context import Context


def record_ledger_facts(conn: psycopg.Connection[Any], batch: Sequence[Context]) -> None:
    """The fact each event states; for an invoice fetched for a thin event, every fact its state implies.

    A fetched invoice is its state now: a failed attempt the event told of
    may have been followed by others, or by the payment. Its state implies
    them all, under the same keys the events would give them. One statement
    for the batch.
    """
    named_facts: list[tuple[PaymentFact, str | None]] = []
    for ctx in batch:
        stated = ledger_fact(ctx.event_type, ctx.obj, ctx.created, account=ctx.account)
        facts = [] if stated is None else [stated]
        if ctx.fetched and event_types.kind_of(ctx.event_type) == "invoice":
            facts = facts_implied_by_invoice(ctx.obj, ctx.created, account=ctx.account)
        for fact in facts:
            # One row per event names it (stripe_event_id is unique): the fact it states.
            named = stated is not None and fact.fact_key == stated.fact_key
            named_facts.append((fact, ctx.event_id if named else None))
    if named_facts:
        payments.record_payments(conn, named_facts)
