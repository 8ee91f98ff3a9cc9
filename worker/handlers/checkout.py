"""checkout.session.* events: only the ledger (a session's subscription arrives as its own events)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from subsync.store.events import Outcome
from subsync.stripe_objects import parse_checkout_session
from worker.handlers.context import Context
from worker.handlers.ledger import record_ledger_facts


def handle_checkout_events(conn: psycopg.Connection[Any], batch: Sequence[Context]) -> list[Outcome]:
    for ctx in batch:
        parse_checkout_session(ctx.obj)  # validates the shape before the ledger reads it
    record_ledger_facts(conn, batch)
    return ["processed"] * len(batch)
