"""customer.* events: the customer's snapshot (a deletion is final)."""

from __future__ import annotations

from typing import Any

import psycopg

from subsync import event_types
from subsync.store import customers
from subsync.store.events import Outcome
from subsync.stripe_objects import parse_customer
from worker.handlers.context import Context


def handle_customer_event(conn: psycopg.Connection[Any], ctx: Context) -> Outcome:
    snapshot = parse_customer(ctx.obj, deleted=ctx.event_type == event_types.CUSTOMER_DELETED, account=ctx.account)
    customers.apply_customer_snapshot(conn, snapshot, ctx.created)
    return "processed"
