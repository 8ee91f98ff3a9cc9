"""customer.subscription.* events: the subscription's snapshot, and the ledger row of a cancellation."""

from __future__ import annotations

from typing import Any

import psycopg

from subsync.store import subscriptions
from subsync.store.events import Outcome
from subsync.stripe_objects import parse_subscription
from worker.handlers.context import Context
from worker.handlers.ledger import record_ledger_fact


def handle_subscription_event(conn: psycopg.Connection[Any], ctx: Context) -> Outcome:
    snapshot = parse_subscription(ctx.obj, account=ctx.account)
    subscriptions.apply_subscription_snapshot(
        conn,
        snapshot,
        ctx.created,
        now=ctx.now,
        grace=ctx.grace,
        source=ctx.source,
        source_id=ctx.event_id,
        locked=True,
    )
    record_ledger_fact(conn, ctx)
    return "processed"
