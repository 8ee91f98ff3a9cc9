"""One handler per kind of Stripe object, chosen by a pure lookup on the event type.

Handlers run inside the applying transaction (worker.apply), which holds
the advisory locks `lock_keys` names for the event, and return the event's
outcome: 'processed', or 'ignored' for a type we do not handle.
Named `handle_<object>_event` as in Zulip's corporate/ handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from subsync import event_types, store
from subsync.ledger import ledger_fact
from subsync.stripe_objects import (
    invoice_subscription_id,
    parse_checkout_session,
    parse_customer,
    parse_invoice,
    parse_subscription,
    ts,
)


@dataclass(frozen=True)
class Context:
    event_id: str
    event_type: str
    created: datetime  # the event's `created`: Stripe's time of its snapshot
    obj: dict[str, Any]
    source: str  # 'webhook', or 'replay' for an event queued again by hand
    now: datetime
    grace: timedelta


Handler = Callable[[psycopg.Connection[Any], Context], str]


def _record_ledger(conn: psycopg.Connection[Any], ctx: Context) -> None:
    fact = ledger_fact(ctx.event_type, ctx.obj, ctx.created)
    if fact is not None:
        store.record_payment(conn, fact, ctx.event_id)


def handle_subscription_event(conn: psycopg.Connection[Any], ctx: Context) -> str:
    snapshot = parse_subscription(ctx.obj)
    store.apply_subscription_snapshot(
        conn,
        snapshot,
        ctx.created,
        now=ctx.now,
        grace=ctx.grace,
        source=ctx.source,
        source_id=ctx.event_id,
        locked=True,
    )
    _record_ledger(conn, ctx)
    return "processed"


def handle_invoice_event(conn: psycopg.Connection[Any], ctx: Context) -> str:
    if event_types.is_preview(ctx.event_type):
        # invoice.upcoming is a preview with no id: nothing to store.
        return "processed"
    snapshot = parse_invoice(ctx.obj)
    written = store.apply_invoice_snapshot(conn, snapshot, ctx.created)
    _record_ledger(conn, ctx)
    if snapshot.subscription_id and written is not None and written.subscription_suspended:
        # The invoice may arrive after its subscription ended suspended: the
        # owed amount is priced on it. An invoice left unchanged changes no price.
        store.reprice_owed_amount(
            conn,
            snapshot.subscription_id,
            now=ctx.now,
            grace=ctx.grace,
            source=ctx.source,
            source_id=ctx.event_id,
        )
    return "processed"


def handle_checkout_event(conn: psycopg.Connection[Any], ctx: Context) -> str:
    parse_checkout_session(ctx.obj)  # validates the shape before the ledger reads it
    _record_ledger(conn, ctx)
    return "processed"


def handle_customer_event(conn: psycopg.Connection[Any], ctx: Context) -> str:
    snapshot = parse_customer(ctx.obj)
    if ctx.event_type == "customer.deleted" and not snapshot.deleted:
        snapshot = type(snapshot)(**{**snapshot.__dict__, "deleted": True})
    store.apply_customer_snapshot(conn, snapshot, ctx.created)
    return "processed"


HANDLERS: dict[str, Handler] = {
    "subscription": handle_subscription_event,
    "invoice": handle_invoice_event,
    "checkout": handle_checkout_event,
    "customer": handle_customer_event,
}


def lock_keys(event_type: str, obj: dict[str, Any]) -> list[str]:
    """The advisory locks (store.lock_objects) that applying this event needs.

    A worker applying several events in one transaction takes them all first,
    in one order, rather than one by one as each handler does on its own.
    """
    kind = event_types.kind_of(event_type)
    obj_id = obj.get("id")
    if kind is None or not isinstance(obj_id, str) or event_types.is_preview(event_type):
        return []
    if kind == "invoice":
        # Its subscription's lock covers the invoice row and the subscription row.
        sub_id = invoice_subscription_id(obj)
        return [f"subscription:{sub_id}"] if sub_id else [f"invoice:{obj_id}"]
    return [f"{kind}:{obj_id}"]


def handler_for(event_type: str) -> Handler | None:
    kind = event_types.kind_of(event_type)
    return None if kind is None else HANDLERS[kind]


def context_for(event_id: str, payload: dict[str, Any], *, replayed: bool, grace: timedelta) -> Context:
    created = ts(payload["created"])
    assert created is not None
    return Context(
        event_id=event_id,
        event_type=payload["type"],
        created=created,
        obj=payload["data"]["object"],
        source="replay" if replayed else "webhook",
        now=datetime.now(UTC),
        grace=grace,
    )
