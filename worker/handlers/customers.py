"""customer.* events: the customers' snapshots (a deletion is final)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from subsync import event_types
from subsync.store import customers
from subsync.store.events import Outcome
from subsync.stripe_objects import parse_customer
from worker.handlers.context import Context


def handle_customer_events(conn: psycopg.Connection[Any], batch: Sequence[Context]) -> list[Outcome]:
    for ctx in batch:
        deleted = ctx.event_type == event_types.CUSTOMER_DELETED
        customers.apply_customer_snapshot(
            conn, parse_customer(ctx.obj, deleted=deleted, account=ctx.account), ctx.created
        )
    return ["processed"] * len(batch)
