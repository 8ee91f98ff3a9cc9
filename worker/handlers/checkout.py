"""checkout.session.* events: only the ledger (a session's subscription arrives as its own events)."""

from __future__ import annotations

from typing import Any

import psycopg

from subsync.store.events import Outcome
from subsync.stripe_objects import parse_checkout_session
from worker.handlers.context import Context
from worker.handlers.ledger import record_ledger_fact


def handle_checkout_event(conn: psycopg.Connection[Any], ctx: Context) -> Outcome:
    parse_checkout_session(ctx.obj)  # validates the shape before the ledger reads it
    record_ledger_fact(conn, ctx)
    return "processed"
