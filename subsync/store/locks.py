"""Advisory locks on Stripe objects: what serialises every writer of one object.

Lock order, always: the event row (the worker's), then these locks (taken
together, in key order), then invoice rows. Callers are inside a
transaction; the locks are released at its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg


def lock_objects(conn: psycopg.Connection[Any], keys: Sequence[str]) -> None:
    """Advisory locks on `kind:id` keys, in key order: one order for every taker, so no deadlock.

    An advisory lock (not a row lock) because the row may not exist yet: two
    first events of a new subscription must not both insert it. A worker
    applying several events at once takes every lock they need up front, so
    that it never waits for one while holding another.
    """
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(key, 0))"
        " FROM (SELECT DISTINCT key FROM unnest(%s::text[]) AS key ORDER BY key) AS ordered",
        (list(keys),),
    )


def subscription_key(subscription_id: str) -> str:
    """The lock of a subscription: it covers its row, its invoices and its audit rows."""
    return f"subscription:{subscription_id}"


def invoice_keys(invoice_id: str, subscription_id: str | None, reactivates: str | None = None) -> list[str]:
    """The locks an invoice's writer takes: its subscription's, which covers both rows, else the invoice's own;
    and, for an invoice of a subscription a reactivation made (`reactivates`, subsync.reactivation), the old
    subscription's, which paying it settles (subsync.reactivate.settle), so that one is not taken late."""
    keys = [subscription_key(subscription_id) if subscription_id else f"invoice:{invoice_id}"]
    return keys if reactivates is None else [*keys, subscription_key(reactivates)]


def lock_subscriptions(conn: psycopg.Connection[Any], subscription_ids: Sequence[str]) -> None:
    """Serialise every writer of these subscriptions until the transaction ends."""
    lock_objects(conn, [subscription_key(sid) for sid in subscription_ids])


def entitlements_key(customer_id: str) -> str:
    """The lock of a customer's entitlements: its set and its watermark."""
    return f"entitlements:{customer_id}"
