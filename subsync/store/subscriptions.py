"""The `subscriptions` table, its items, its audit trail (`subscription_changes`) and the access feed.

Every writer (the worker, the reconciler, the grace check, a replay) goes
through `apply_subscription_snapshots`, so each change writes its audit row
and, when `access` moves, its row in the durable feed `access_changes` and
its NOTIFY, in the same transaction as the change: a rolled-back change is
never announced nor fed. Callers hold the subscription's
lock (subsync.store.locks) or let these functions take it, inside a
transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from subsync.access import Access, time_dependent_sql
from subsync.db import Query, RowsStatement, execute_rows, fetch_together, id_match
from subsync.store.invoices import unpaid_invoice, unpaid_invoices_from, unpaid_invoices_query
from subsync.store.locks import lock_subscriptions
from subsync.stripe_objects import ItemSnapshot, SubscriptionSnapshot
from subsync.transitions import (
    SubscriptionState,
    changed_columns,
    next_subscription_state,
    recompute,
)

# The channel the access feed is announced on; consumers LISTEN on it by name.
NOTIFY_CHANNEL = "subscription_access"
# One lock for every writer of the access feed (access_changes), held from
# its insert to its commit: a row with a higher id is never visible before
# one with a lower, so a reader that resumes after the last id it processed
# misses none.
FEED_LOCK_KEY = 0x5B5C_0201
# The feed row and its announcement in one statement; NOTIFY is delivered at
# commit, so a rolled-back change is never announced.
_INSERT_ACCESS_CHANGE = RowsStatement(
    head="INSERT INTO access_changes (subscription_id, customer_id, account, from_access, to_access, source, source_id)"
    " VALUES",
    row="({}, {}, {}, {}, {}, {}, {})",
    tail=f"""RETURNING pg_notify('{NOTIFY_CHANNEL}', json_build_object(
        'id', id, 'subscription_id', subscription_id, 'customer_id', customer_id, 'account', account,
        'from', from_access, 'to', to_access, 'at', changed_at, 'source', source)::text)""",
)
# Who made a change: an event, the reconciliation, the grace check, a replay,
# or a reactivation's settlement (subsync.reactivate).
Source = Literal["webhook", "reconcile", "grace", "replay", "reactivate"]
# The sources whose snapshots are answers of Stripe's API read now, never an event's.
_READ_FROM_API: frozenset[Source] = frozenset({"reconcile", "grace"})

SUBSCRIPTION_COLUMNS = tuple(f.name for f in fields(SubscriptionState))
_SELECT = f"SELECT {', '.join(SUBSCRIPTION_COLUMNS)} FROM subscriptions"  # noqa: S608 - fixed names


@dataclass(frozen=True)
class Applied:
    """What applying one snapshot did."""

    state: SubscriptionState | None  # the row after (None: stale and no row)
    stale: bool  # older than what we hold: nothing written
    changed: bool  # an audited column changed


def load_subscriptions(conn: psycopg.Connection[Any], subscription_ids: Sequence[str]) -> dict[str, SubscriptionState]:
    [rows] = fetch_together(conn, [_subscriptions_query(subscription_ids)])
    return _subscriptions_from(rows)


def _subscriptions_query(subscription_ids: Sequence[str]) -> Query:
    where, param, prepare = id_match("id", subscription_ids)
    return Query(f"{_SELECT} WHERE {where}", (param,), prepare)


def _subscriptions_from(rows: Sequence[dict[str, Any]]) -> dict[str, SubscriptionState]:
    return {row["id"]: SubscriptionState.from_row(row) for row in rows}


def load_subscription(conn: psycopg.Connection[Any], subscription_id: str) -> SubscriptionState | None:
    return load_subscriptions(conn, [subscription_id]).get(subscription_id)


def _column_values(state: SubscriptionState) -> tuple[Any, ...]:
    """The row's values in SUBSCRIPTION_COLUMNS' order."""
    # Not dataclasses.asdict: it deep-copies every value, which dominated a
    # large first reconciliation.
    values = {column: getattr(state, column) for column in SUBSCRIPTION_COLUMNS}
    values["access"] = str(state.access.value)
    values["metadata"] = Jsonb(values["metadata"] or {})
    return tuple(values.values())


_UPSERT_SUBSCRIPTION = RowsStatement(
    head=f"INSERT INTO subscriptions ({', '.join(SUBSCRIPTION_COLUMNS)}, updated_at) VALUES",
    row=f"({', '.join(['{}'] * len(SUBSCRIPTION_COLUMNS))}, now())",
    tail="ON CONFLICT (id) DO UPDATE SET "
    + ", ".join([*(f"{c} = EXCLUDED.{c}" for c in SUBSCRIPTION_COLUMNS if c != "id"), "updated_at = now()"]),
)
_INSERT_CHANGE = RowsStatement(
    head="INSERT INTO subscription_changes (subscription_id, source, source_id, before, after) VALUES",
    row="({}, {}, {}, {}, {})",
)
ITEM_COLUMNS = ("id", "price_id", "product_id", "quantity", "current_period_start", "current_period_end")
_INSERT_ITEM = RowsStatement(
    head=f"INSERT INTO subscription_items (subscription_id, account, {', '.join(ITEM_COLUMNS)}) VALUES",
    row=f"({', '.join(['{}'] * (2 + len(ITEM_COLUMNS)))})",
)
# A subscription's items, in id order: equal sets compare equal.
Items = tuple[ItemSnapshot, ...]


def items_of(snapshot: SubscriptionSnapshot) -> Items:
    return tuple(sorted(snapshot.items, key=lambda item: item.id))


def load_items(conn: psycopg.Connection[Any], subscription_ids: Sequence[str]) -> dict[str, Items]:
    """The stored items of these subscriptions (a subscription without any is absent)."""
    return load_items_with_accounts(conn, subscription_ids)[0]


def load_items_with_accounts(
    conn: psycopg.Connection[Any], subscription_ids: Sequence[str]
) -> tuple[dict[str, Items], dict[str, frozenset[str | None]]]:
    """The stored items of these subscriptions, and the accounts each one's items are filed under."""
    [rows] = fetch_together(conn, [_items_query(subscription_ids)])
    return _items_from(rows), _item_accounts(rows)


def _items_query(subscription_ids: Sequence[str]) -> Query:
    where, param, prepare = id_match("subscription_id", subscription_ids)
    columns = ", ".join(("subscription_id", "account", *ITEM_COLUMNS))
    sql = f"SELECT {columns} FROM subscription_items WHERE {where} ORDER BY id"  # noqa: S608
    return Query(sql, (param,), prepare)


def _items_from(rows: Sequence[dict[str, Any]]) -> dict[str, Items]:
    found: dict[str, list[ItemSnapshot]] = {}
    for row in rows:
        found.setdefault(row["subscription_id"], []).append(ItemSnapshot(**{c: row[c] for c in ITEM_COLUMNS}))
    return {sub_id: tuple(items) for sub_id, items in found.items()}


def _item_accounts(rows: Sequence[dict[str, Any]]) -> dict[str, frozenset[str | None]]:
    found: dict[str, set[str | None]] = {}
    for row in rows:
        found.setdefault(row["subscription_id"], set()).add(row["account"])
    return {sub_id: frozenset(accounts) for sub_id, accounts in found.items()}


def _items_json(items: Items | None) -> list[dict[str, Any]]:
    return [
        {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in zip(ITEM_COLUMNS, (getattr(item, c) for c in ITEM_COLUMNS), strict=True)
        }
        for item in items or ()
    ]


@dataclass(frozen=True)
class _Write:
    """One subscription's writes: its row (unless unchanged), its items (if changed), its audit row and NOTIFY."""

    id: str
    row: tuple[Any, ...] | None
    items: Items | None
    account: str | None
    change: tuple[Any, ...] | None
    access_change: tuple[Any, ...] | None


def _plan_write(
    before: SubscriptionState | None,
    after: SubscriptionState,
    *,
    source: Source,
    source_id: str | None,
    items_before: Items | None = None,
    items_after: Items | None = None,
    items_misfiled: bool = False,
) -> _Write | None:
    """What writing `after` (and, when given, `items_after`) over `before` takes; None if nothing.

    `items_misfiled`: some stored item is filed under another account than `after`'s, so the items are rewritten.
    """
    items_changed = items_after is not None and ((items_before or ()) != items_after or items_misfiled)
    if before == after and not items_changed:
        return None
    old, new = changed_columns(before, after)
    if items_changed:
        if old is not None:
            old = {**old, "items": _items_json(items_before)}
        new = {**new, "items": _items_json(items_after)}
    change = None
    if new:
        change = (after.id, source, source_id, None if old is None else Jsonb(old), Jsonb(new))
    before_access = None if before is None else before.access
    access_change = None
    if before_access != after.access:
        access_change = (
            after.id,
            after.customer_id,
            after.account,
            None if before_access is None else str(before_access.value),
            str(after.access.value),
            source,
            source_id,
        )
    return _Write(
        id=after.id,
        row=None if before == after else _column_values(after),
        items=items_after if items_changed else None,
        account=after.account,
        change=change,
        access_change=access_change,
    )


def _execute_writes(conn: psycopg.Connection[Any], writes: Sequence[_Write]) -> None:
    """Send every write in one pipeline, one statement per table: no round trip, no statement, per row."""
    if not writes:
        return
    rows = [w.row for w in writes if w.row is not None]
    replaced = [w for w in writes if w.items is not None]
    with conn.pipeline():
        if rows:
            execute_rows(conn, _UPSERT_SUBSCRIPTION, rows)
        if replaced:
            conn.execute("DELETE FROM subscription_items WHERE subscription_id = ANY(%s)", ([w.id for w in replaced],))
            item_rows = [
                (w.id, w.account, *(getattr(item, column) for column in ITEM_COLUMNS))
                for w in replaced
                for item in w.items or ()
            ]
            if item_rows:
                execute_rows(conn, _INSERT_ITEM, item_rows)
        changes = [w.change for w in writes if w.change is not None]
        if changes:
            execute_rows(conn, _INSERT_CHANGE, changes)
        access_changes = [w.access_change for w in writes if w.access_change is not None]
        if access_changes:
            # Taken last, held to the commit: feed ids are handed out in commit order.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (FEED_LOCK_KEY,))
            execute_rows(conn, _INSERT_ACCESS_CHANGE, access_changes)


def save_subscription(
    conn: psycopg.Connection[Any],
    before: SubscriptionState | None,
    after: SubscriptionState,
    *,
    source: Source,
    source_id: str | None,
) -> bool:
    """Write `after` if it differs from `before`, with its audit row and NOTIFY.

    Returns True when an audited column changed.
    """
    write = _plan_write(before, after, source=source, source_id=source_id)
    if write is None:
        return False
    _execute_writes(conn, [write])
    return write.change is not None


def apply_subscription_snapshots(
    conn: psycopg.Connection[Any],
    snapshots: Sequence[tuple[SubscriptionSnapshot, datetime]],
    *,
    now: datetime,
    grace: timedelta,
    source: Source,
    source_id: str | None,
    source_ids: Sequence[str | None] | None = None,
    locked: bool = False,
) -> list[Applied]:
    """Apply Stripe's view of several subscriptions, skipping any older than ours.

    The reconciler applies a page at a time, the worker a batch of events:
    the locks, the reads and the writes are one statement each however many
    subscriptions there are. `source_ids`: each snapshot's own source id
    (the worker's, its event's) instead of `source_id` for all; a
    subscription given twice gets one audit row, named by the later.
    `locked`: the caller holds their locks already (the worker takes every
    lock of its batch first).
    """
    ids = [snapshot.id for snapshot, _ in snapshots]
    named = [source_id] * len(snapshots) if source_ids is None else list(source_ids)
    if not locked:
        lock_subscriptions(conn, ids)
    # The three reads in one round trip.
    rows = fetch_together(conn, [_subscriptions_query(ids), _items_query(ids), unpaid_invoices_query(ids)])
    current: dict[str, SubscriptionState | None] = dict(_subscriptions_from(rows[0]))
    stored_items = _items_from(rows[1])
    filed_under = _item_accounts(rows[1])
    unpaid = unpaid_invoices_from(conn, rows[2])
    results: list[Applied] = []
    # Per subscription: the row and items before this call, after its last applied snapshot, and its source id.
    writes: dict[str, tuple[SubscriptionState | None, Items, SubscriptionState, Items, str | None]] = {}
    for (snapshot, seen_at), snapshot_source_id in zip(snapshots, named, strict=True):
        before = current.get(snapshot.id)
        after = next_subscription_state(
            before,
            snapshot,
            seen_at,
            now=now,
            grace=grace,
            unpaid_invoice=unpaid.get(snapshot.id),
            read_from_api=source in _READ_FROM_API,
        )
        if after is None:
            results.append(Applied(state=before, stale=True, changed=False))
            continue
        items_before = stored_items.get(snapshot.id, ())
        items_after = items_of(snapshot)
        earlier = writes.get(snapshot.id)
        first_before, first_items = (earlier[0], earlier[1]) if earlier else (before, items_before)
        writes[snapshot.id] = (first_before, first_items, after, items_after, snapshot_source_id)
        current[snapshot.id] = after
        stored_items[snapshot.id] = items_after
        misfiled = bool(filed_under.get(snapshot.id, frozenset()) - {after.account})
        changed = bool(changed_columns(before, after)[1]) or items_before != items_after or misfiled
        results.append(Applied(state=after, stale=False, changed=changed))
    planned = [
        _plan_write(
            b,
            a,
            source=source,
            source_id=sid,
            items_before=ib,
            items_after=ia,
            items_misfiled=bool(filed_under.get(a.id, frozenset()) - {a.account}),
        )
        for b, ib, a, ia, sid in writes.values()
    ]
    _execute_writes(conn, [w for w in planned if w is not None])
    return results


def apply_subscription_snapshot(
    conn: psycopg.Connection[Any],
    snapshot: SubscriptionSnapshot,
    seen_at: datetime,
    *,
    now: datetime,
    grace: timedelta,
    source: Source,
    source_id: str | None,
    locked: bool = False,
) -> Applied:
    """Apply Stripe's view of a subscription, unless we hold a newer one."""
    return apply_subscription_snapshots(
        conn, [(snapshot, seen_at)], now=now, grace=grace, source=source, source_id=source_id, locked=locked
    )[0]


def reprice_owed_amount(
    conn: psycopg.Connection[Any],
    subscription_id: str,
    *,
    now: datetime,
    grace: timedelta,
    source: Source,
    source_id: str | None,
) -> Applied:
    """After an invoice changed: the owed amount of a suspended subscription is priced on it.

    Only a suspended subscription's row depends on its invoices, so the others
    are left alone (access moves with time in the scheduler's refresh, not
    here). The caller holds the subscription's lock.
    """
    before = load_subscription(conn, subscription_id)
    if before is None or before.access != Access.SUSPENDED:
        return Applied(state=before, stale=False, changed=False)
    return _recompute_and_save(conn, before, now=now, grace=grace, source=source, source_id=source_id)


def recompute_subscription(
    conn: psycopg.Connection[Any],
    subscription_id: str,
    *,
    now: datetime,
    grace: timedelta,
    source: Source,
    source_id: str | None,
) -> Applied:
    """Recompute the time- and invoice-dependent columns (access, owed_amount)."""
    lock_subscriptions(conn, [subscription_id])
    before = load_subscription(conn, subscription_id)
    if before is None:
        return Applied(state=None, stale=False, changed=False)
    return _recompute_and_save(conn, before, now=now, grace=grace, source=source, source_id=source_id)


def _recompute_and_save(
    conn: psycopg.Connection[Any],
    before: SubscriptionState,
    *,
    now: datetime,
    grace: timedelta,
    source: Source,
    source_id: str | None,
) -> Applied:
    after = recompute(before, now=now, grace=grace, unpaid_invoice=unpaid_invoice(conn, before.id))
    changed = save_subscription(conn, before, after, source=source, source_id=source_id)
    return Applied(state=after, stale=False, changed=changed)


# --- The grace check's reads (reconciler.grace) -----------------------------------


def due_for_grace_check(
    conn: psycopg.Connection[Any], *, now: datetime, grace: timedelta, after: str = "", limit: int = 1000
) -> list[dict[str, Any]]:
    """Rows whose access must move now: full past period end, or grace run out; `id > after`, by id.

    Read through the partial index `subscriptions_time_dependent_idx`, whose
    predicate is `access.time_dependent_sql()`: the cost follows the number of
    renewals due, not the size of the table.
    """
    return conn.execute(
        f"""
        SELECT id, access, current_period_end, account FROM subscriptions
         WHERE {time_dependent_sql()}
           AND current_period_end <= %(now)s
           AND (access = 'full' OR current_period_end <= %(now)s - %(grace)s)
           AND id > %(after)s
         ORDER BY id
         LIMIT %(limit)s
        """,  # noqa: S608 - a fixed predicate, values bound
        {"now": now, "grace": grace, "after": after, "limit": limit},
    ).fetchall()


def due_for_confirmation(conn: psycopg.Connection[Any], *, after: str = "", limit: int = 1000) -> list[dict[str, Any]]:
    """Rows applied on a same-second guess (`confirm_requested_at` set), `id > after`, by id.

    Read through the partial index `subscriptions_confirm_requested_idx`.
    """
    return conn.execute(
        """
        SELECT id, account FROM subscriptions
         WHERE confirm_requested_at IS NOT NULL AND id > %(after)s
         ORDER BY id
         LIMIT %(limit)s
        """,
        {"after": after, "limit": limit},
    ).fetchall()


# --- The reconciliation's set of ids Stripe listed ------------------------------------


NOT_SEEN = (
    "SELECT s.id FROM subscriptions s WHERE s.account IS NOT DISTINCT FROM %s"
    " AND NOT EXISTS (SELECT 1 FROM reconcile_seen r WHERE r.id = s.id) ORDER BY s.id"
)


def start_seen(conn: psycopg.Connection[Any]) -> None:
    """A temporary table, on this connection, of the ids a reconciliation saw in Stripe's listing."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS reconcile_seen (id text NOT NULL)")
    # The planner's estimates of both tables can be far off (autovacuum never
    # analyzes a temporary table; a first run has just created every row):
    # with an index, its worst plan is a probe per subscription, not a scan.
    conn.execute("CREATE INDEX IF NOT EXISTS reconcile_seen_id ON reconcile_seen (id)")
    conn.execute("TRUNCATE reconcile_seen")
    conn.commit()


def add_seen(conn: psycopg.Connection[Any], ids: Sequence[str]) -> None:
    with conn.cursor().copy("COPY reconcile_seen (id) FROM STDIN") as copy:
        for sub_id in ids:
            copy.write_row((sub_id,))
    conn.commit()


def not_seen(conn: psycopg.Connection[Any], *, account: str | None) -> Iterator[str]:
    """Ids of our subscriptions of `account` that Stripe did not list there, by id; drops the table once read."""
    conn.execute("ANALYZE reconcile_seen")
    rows = conn.execute(NOT_SEEN, (account,)).fetchall()
    conn.execute("DROP TABLE reconcile_seen")
    conn.commit()
    for row in rows:
        yield row["id"]


def connected_accounts(conn: psycopg.Connection[Any]) -> list[str]:
    """Every connected account we hold a subscription, an invoice, a customer or an event of, in order."""
    rows = conn.execute(
        """
        WITH RECURSIVE event_accounts AS (
            (SELECT account FROM stripe_events WHERE account IS NOT NULL ORDER BY account LIMIT 1)
            UNION ALL
            SELECT (SELECT e.account FROM stripe_events e WHERE e.account > event_accounts.account
                     ORDER BY e.account LIMIT 1)
              FROM event_accounts WHERE event_accounts.account IS NOT NULL
        )
        SELECT account FROM event_accounts WHERE account IS NOT NULL
        UNION SELECT account FROM subscriptions WHERE account IS NOT NULL
        UNION SELECT account FROM invoices WHERE account IS NOT NULL
        UNION SELECT account FROM customers WHERE account IS NOT NULL
        ORDER BY account
        """
    ).fetchall()
    return [r["account"] for r in rows]
