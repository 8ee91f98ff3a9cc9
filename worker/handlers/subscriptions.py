"""customer.subscription.* events: the subscriptions' snapshots, and the ledger rows of cancellations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from subsync.store import subscriptions
from subsync.store.events import Outcome
from subsync.stripe_objects import parse_subscription
from worker.handlers.context import Context, shared
from worker.handlers.ledger import record_ledger_facts


def handle_subscription_events(conn: psycopg.Connection[Any], batch: Sequence[Context]) -> list[Outcome]:
    snapshots = [(parse_subscription(ctx.obj, account=ctx.account), ctx.created) for ctx in batch]
    now, grace, source = shared(batch)
    subscriptions.apply_subscription_snapshots(
        conn,
        snapshots,
        now=now,
        grace=grace,
        source=source,
        source_id=None,
        source_ids=[ctx.event_id for ctx in batch],
        locked=True,
    )
    record_ledger_facts(conn, batch)
    return ["processed"] * len(batch)
