"""entitlements.active_entitlement_summary.updated: each customer's set of active entitlements, replaced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from subsync.store import entitlements
from subsync.store.events import Outcome
from subsync.stripe_objects import MalformedObject, parse_entitlement_summary, previous_entitlements
from worker.handlers.context import Context


def handle_entitlements_events(conn: psycopg.Connection[Any], batch: Sequence[Context]) -> list[Outcome]:
    for ctx in batch:
        summary = parse_entitlement_summary(ctx.obj, account=ctx.account)
        if summary.has_more:
            # worker.prefetch completes such a summary before it gets here;
            # part of a list must never stand for the whole set.
            msg = "entitlement summary still cut short (has_more) when applied"
            raise MalformedObject(msg)
        entitlements.apply_entitlement_set(
            conn,
            summary.customer_id,
            summary.entitlements,
            ctx.created,
            account=summary.account,
            previous=previous_entitlements(ctx.previous),
        )
    return ["processed"] * len(batch)
