"""`customer_entitlements` and `entitlement_summaries`: each customer's active entitlements, replaced as a set.

A set is applied with the Stripe time it is true as of (a summary event's
`created`, or the `Date` of the API answer that listed it), by the rule
`transitions.is_newer_entitlement_set`: older is skipped; in the same
second, a summary applies only after the set it says came before. The
watermark lives in `entitlement_summaries`, one row per customer, kept
when the set is empty. Callers hold the customer's lock
(subsync.store.locks.entitlements_key), inside a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from subsync.db import id_match
from subsync.stripe_objects import Entitlement
from subsync.transitions import is_newer_entitlement_set


@dataclass(frozen=True)
class HeldSet:
    """A customer's entitlements here and the Stripe time they are true as of."""

    stripe_updated_at: datetime
    entitlements: tuple[Entitlement, ...]  # in feature id order


@dataclass(frozen=True)
class AppliedSet:
    """What applying one set did."""

    stale: bool  # older than the set held: nothing written
    changed: bool  # the set itself changed (not only its time)
    before: tuple[Entitlement, ...]


def load_sets(conn: psycopg.Connection[Any], customer_ids: Sequence[str]) -> dict[str, HeldSet]:
    """The sets held for these customers (a customer never summarised is absent)."""
    if not customer_ids:
        return {}
    where, param, prepare = id_match("s.customer_id", customer_ids)
    rows = conn.execute(
        f"""
        SELECT s.customer_id, s.stripe_updated_at, e.feature_id, e.lookup_key, e.entitlement_id
          FROM entitlement_summaries s
          LEFT JOIN customer_entitlements e ON e.customer_id = s.customer_id
         WHERE {where}
         ORDER BY s.customer_id, e.feature_id
        """,  # noqa: S608 - a fixed clause, values bound
        (param,),
        prepare=prepare,
    ).fetchall()
    found: dict[str, tuple[datetime, list[Entitlement]]] = {}
    for row in rows:
        _, listed = found.setdefault(row["customer_id"], (row["stripe_updated_at"], []))
        if row["feature_id"] is not None:
            listed.append(Entitlement(row["feature_id"], row["lookup_key"], row["entitlement_id"]))
    return {cid: HeldSet(at, tuple(listed)) for cid, (at, listed) in found.items()}


def apply_entitlement_set(
    conn: psycopg.Connection[Any],
    customer_id: str,
    entitlements: tuple[Entitlement, ...],
    seen_at: datetime,
    *,
    account: str | None,
    previous: tuple[Entitlement, ...] | None = None,
) -> AppliedSet:
    """Replace the customer's set with `entitlements` (one per feature, in feature id order) unless ours is newer.

    `previous`: the set before this one, as the summary says (None: not said).
    """
    held = load_sets(conn, [customer_id]).get(customer_id)
    before = () if held is None else held.entitlements
    if held is not None and not is_newer_entitlement_set(held.stripe_updated_at, held.entitlements, seen_at, previous):
        return AppliedSet(stale=True, changed=False, before=before)
    conn.execute(
        """
        INSERT INTO entitlement_summaries (customer_id, account, stripe_updated_at) VALUES (%s, %s, %s)
        ON CONFLICT (customer_id) DO UPDATE
           SET account = EXCLUDED.account, stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()
        """,
        (customer_id, account, seen_at),
    )
    changed = before != entitlements
    with conn.cursor() as cur:
        if changed:
            cur.execute("DELETE FROM customer_entitlements WHERE customer_id = %s", (customer_id,))
            if entitlements:
                cur.executemany(
                    "INSERT INTO customer_entitlements"
                    " (customer_id, feature_id, lookup_key, account, stripe_updated_at, entitlement_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    [(customer_id, e.feature_id, e.lookup_key, account, seen_at, e.id) for e in entitlements],
                )
        elif entitlements:
            cur.execute(
                "UPDATE customer_entitlements SET stripe_updated_at = %s WHERE customer_id = %s",
                (seen_at, customer_id),
            )
    return AppliedSet(stale=False, changed=changed, before=before)


def _of_account(column: str, account: str | None) -> str:
    # `IS NOT DISTINCT FROM` would read every row: no index serves it.
    return f"{column} IS NULL" if account is None else f"{column} = %(account)s"


def customers_to_reconcile(
    conn: psycopg.Connection[Any], *, account: str | None, after: str = "", limit: int = 1000
) -> list[str]:
    """The next `limit` customers of `account` (None: the platform's) with a subscription or a set here, by id.

    Each branch stops at `limit` ids past `after`, so a page costs the same
    however many customers follow it.
    """
    rows = conn.execute(
        f"""
        SELECT customer_id FROM (
            (SELECT DISTINCT customer_id FROM subscriptions
              WHERE customer_id > %(after)s AND {_of_account("account", account)}
              ORDER BY customer_id LIMIT %(limit)s)
            UNION
            (SELECT customer_id FROM entitlement_summaries
              WHERE customer_id > %(after)s AND {_of_account("account", account)}
              ORDER BY customer_id LIMIT %(limit)s)
        ) AS known
        ORDER BY customer_id LIMIT %(limit)s
        """,  # noqa: S608 - fixed clauses, values bound
        {"after": after, "account": account, "limit": limit},
    ).fetchall()
    return [r["customer_id"] for r in rows]


def count_customers_to_reconcile(conn: psycopg.Connection[Any], *, account: str | None) -> int:
    """How many customers of `account` have a subscription or a set here."""
    row = conn.execute(
        f"""
        SELECT count(*) AS n FROM (
            SELECT customer_id FROM subscriptions WHERE customer_id IS NOT NULL AND {_of_account("account", account)}
            UNION
            SELECT customer_id FROM entitlement_summaries WHERE {_of_account("account", account)}
        ) AS known
        """,  # noqa: S608 - fixed clauses, values bound
        {"account": account},
    ).fetchone()
    return int(row["n"]) if row else 0


def customers_with_entitlements(conn: psycopg.Connection[Any], *, account: str | None) -> list[str]:
    """The customers of `account` holding at least one entitlement here, by id."""
    rows = conn.execute(
        f"""
        SELECT s.customer_id FROM entitlement_summaries s
         WHERE {_of_account("s.account", account)}
           AND EXISTS (SELECT 1 FROM customer_entitlements e WHERE e.customer_id = s.customer_id)
         ORDER BY s.customer_id
        """,  # noqa: S608 - a fixed clause, values bound
        {"account": account},
    ).fetchall()
    return [r["customer_id"] for r in rows]


def customer_access(conn: psycopg.Connection[Any], customer_id: str) -> dict[str, Any] | None:
    """The row of the view `customer_access` for one customer (the application's gating query), or None."""
    return conn.execute(
        "SELECT customer_id, account, access, features, owed_amount FROM customer_access WHERE customer_id = %s",
        (customer_id,),
    ).fetchone()
