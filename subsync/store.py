"""Reading and writing the state tables: subscriptions, invoices, customers, payments.

Every writer (the worker, the reconciler, the grace check, a replay) goes
through `apply_subscription_snapshot`, so each change writes its audit row and,
when `access` moves, its NOTIFY in the same transaction as the change: a
rolled-back change is never announced.

Lock order, always: event row (the worker's), then the subscription's advisory
lock, then invoice rows. Callers must be inside a transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from subsync.access import Access
from subsync.ledger import PaymentFact
from subsync.stripe_objects import CustomerSnapshot, InvoiceSnapshot, SubscriptionSnapshot
from subsync.transitions import (
    InvoiceState,
    SubscriptionState,
    changed_columns,
    next_invoice_state,
    next_subscription_state,
    recompute,
)

NOTIFY_CHANNEL = "subscription_access"
SOURCES = ("webhook", "reconcile", "grace", "replay")
# The watermark moves with every newer snapshot; on its own it is not a change
# worth an audit row.
NOT_AUDITED = frozenset({"stripe_updated_at"})

SUBSCRIPTION_COLUMNS = tuple(f.name for f in fields(SubscriptionState))
INVOICE_COLUMNS = tuple(f.name for f in fields(InvoiceState))


@dataclass(frozen=True)
class Applied:
    """What applying one snapshot did."""

    state: SubscriptionState | None  # the row after (None: stale and no row)
    stale: bool  # older than what we hold: nothing written
    changed: bool  # an audited column changed
    before: SubscriptionState | None = None


def lock_subscriptions(conn: psycopg.Connection[Any], subscription_ids: Sequence[str]) -> None:
    """Serialise every writer of these subscriptions until the transaction ends.

    An advisory lock (not a row lock) because the row may not exist yet: two
    first events of a new subscription must not both insert it. Several are
    taken in id order, so two batches can never deadlock each other.
    """
    lock_objects(conn, [f"subscription:{sid}" for sid in subscription_ids])


def lock_objects(conn: psycopg.Connection[Any], keys: Sequence[str]) -> None:
    """Advisory locks on `kind:id` keys, in key order: one order for every taker, so no deadlock.

    `subscription:<id>` is the subscription's lock above; a worker applying
    several events at once also takes its customers', invoices' and checkout
    sessions' up front, so that it never waits for one while holding another.
    """
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(key, 0))"
        " FROM (SELECT DISTINCT key FROM unnest(%s::text[]) AS key ORDER BY key) AS ordered",
        (list(keys),),
    )


def lock_subscription(conn: psycopg.Connection[Any], subscription_id: str) -> None:
    lock_subscriptions(conn, [subscription_id])


def _state(row: dict[str, Any]) -> SubscriptionState:
    row["access"] = Access(row["access"])
    return SubscriptionState(**row)


def id_match(column: str, ids: Sequence[str]) -> tuple[str, Any, bool | None]:
    """A WHERE clause for rows whose `column` is among `ids`: (clause, its parameter, `prepare=`).

    psycopg prepares a statement run 5 times, and PostgreSQL may then keep one
    generic plan for it, made from the table's size at the time. `= ANY($1)`
    planned while a table is nearly empty stays a sequential scan, comparing
    each row with every element, however large the table grows until
    autovacuum's ANALYZE replans it: the first reconciliation into an empty
    table went quadratic that way (15 ms a page at 4,000 rows and growing).
    One id is `= $1`, an index scan in any plan; several are planned each time
    with the array's values (a hashed lookup, or the index once the table is
    large), a planning cost far below a scan.
    """
    if len(ids) == 1:
        return f"{column} = %s", ids[0], None
    return f"{column} = ANY(%s)", list(ids), False


def load_subscriptions(conn: psycopg.Connection[Any], subscription_ids: Sequence[str]) -> dict[str, SubscriptionState]:
    where, param, prepare = id_match("id", subscription_ids)
    rows = conn.execute(
        f"SELECT {', '.join(SUBSCRIPTION_COLUMNS)} FROM subscriptions WHERE {where}",  # noqa: S608 - fixed names
        (param,),
        prepare=prepare,
    ).fetchall()
    return {row["id"]: _state(row) for row in rows}


def load_subscription(conn: psycopg.Connection[Any], subscription_id: str) -> SubscriptionState | None:
    return load_subscriptions(conn, [subscription_id]).get(subscription_id)


def load_invoice(conn: psycopg.Connection[Any], invoice_id: str) -> InvoiceState | None:
    row = conn.execute(
        f"SELECT {', '.join(INVOICE_COLUMNS)} FROM invoices WHERE id = %s FOR UPDATE",  # noqa: S608
        (invoice_id,),
    ).fetchone()
    return None if row is None else InvoiceState(**row)


def unpaid_invoices(conn: psycopg.Connection[Any], subscription_ids: Sequence[str]) -> dict[str, InvoiceState]:
    """Each subscription's newest invoice left unpaid: what owed_amount is priced on."""
    where, param, prepare = id_match("subscription_id", subscription_ids)
    rows = conn.execute(
        f"""SELECT DISTINCT ON (subscription_id) {", ".join(INVOICE_COLUMNS)} FROM invoices
             WHERE {where} AND status IN ('open', 'uncollectible')
             ORDER BY subscription_id, created_at DESC NULLS LAST, id DESC""",  # noqa: S608
        (param,),
        prepare=prepare,
    ).fetchall()
    return {row["subscription_id"]: InvoiceState(**row) for row in rows}


def unpaid_invoice(conn: psycopg.Connection[Any], subscription_id: str) -> InvoiceState | None:
    return unpaid_invoices(conn, [subscription_id]).get(subscription_id)


def _column_values(state: SubscriptionState) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies every value, a third of the
    # reconciler's time on a large first run.
    values = {column: getattr(state, column) for column in SUBSCRIPTION_COLUMNS}
    values["access"] = str(state.access.value)
    values["metadata"] = Jsonb(values["metadata"] or {})
    return values


_UPSERT_SUBSCRIPTION = (
    f"INSERT INTO subscriptions ({', '.join(SUBSCRIPTION_COLUMNS)}, updated_at)"  # noqa: S608 - fixed names
    f" VALUES ({', '.join(f'%({c})s' for c in SUBSCRIPTION_COLUMNS)}, now())"
    f" ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in SUBSCRIPTION_COLUMNS if c != 'id')},"
    " updated_at = now()"
)
_UPSERT_INVOICE = (
    f"INSERT INTO invoices ({', '.join(INVOICE_COLUMNS)}, updated_at)"  # noqa: S608 - fixed names
    f" VALUES ({', '.join(f'%({c})s' for c in INVOICE_COLUMNS)}, now())"
    f" ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in INVOICE_COLUMNS if c != 'id')},"
    " updated_at = now()"
    # The subscription's access, read in the same statement: only a suspended one is repriced.
    " RETURNING (SELECT s.access FROM subscriptions AS s WHERE s.id = invoices.subscription_id) AS access"
)
_INSERT_CHANGE = (
    "INSERT INTO subscription_changes (subscription_id, source, source_id, before, after) VALUES (%s, %s, %s, %s, %s)"
)


@dataclass(frozen=True)
class _Write:
    """One subscription row to write, with its audit row and notification (if any)."""

    row: dict[str, Any]
    change: tuple[Any, ...] | None
    notify: str | None


def _plan_write(
    before: SubscriptionState | None, after: SubscriptionState, *, source: str, source_id: str | None
) -> _Write | None:
    if source not in SOURCES:
        msg = f"unknown change source {source!r}"
        raise ValueError(msg)
    if before == after:
        return None
    old, new = changed_columns(before, after)
    audited = {k: v for k, v in new.items() if k not in NOT_AUDITED}
    change = None
    if audited:
        old_audited = None if old is None else {k: v for k, v in old.items() if k not in NOT_AUDITED}
        change = (after.id, source, source_id, None if old_audited is None else Jsonb(old_audited), Jsonb(audited))
    before_access = None if before is None else before.access
    notify = None
    if before_access != after.access:
        notify = json.dumps(
            {
                "subscription_id": after.id,
                "customer_id": after.customer_id,
                "from": None if before_access is None else str(before_access.value),
                "to": str(after.access.value),
                "at": datetime.now(UTC).isoformat(),
            }
        )
    return _Write(row=_column_values(after), change=change, notify=notify)


def _execute_writes(conn: psycopg.Connection[Any], writes: Sequence[_Write]) -> None:
    """Send every write in one pipeline: no round trip per statement."""
    if not writes:
        return
    with conn.pipeline(), conn.cursor() as cur:
        cur.executemany(_UPSERT_SUBSCRIPTION, [w.row for w in writes])
        changes = [w.change for w in writes if w.change is not None]
        if changes:
            cur.executemany(_INSERT_CHANGE, changes)
        notes = [(NOTIFY_CHANNEL, w.notify) for w in writes if w.notify is not None]
        if notes:
            cur.executemany("SELECT pg_notify(%s, %s)", notes)


def save_subscription(
    conn: psycopg.Connection[Any],
    before: SubscriptionState | None,
    after: SubscriptionState,
    *,
    source: str,
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
    source: str,
    source_id: str | None,
    locked: bool = False,
) -> list[Applied]:
    """Apply Stripe's view of several subscriptions, skipping any older than ours.

    The reconciler applies a page at a time: the locks, the reads and the
    writes are one statement each however many subscriptions the page holds.
    `locked`: the caller holds their locks already (the worker takes every
    lock of its batch first).
    """
    ids = [snapshot.id for snapshot, _ in snapshots]
    if not locked:
        lock_subscriptions(conn, ids)
    current: dict[str, SubscriptionState | None] = dict(load_subscriptions(conn, ids))
    unpaid = unpaid_invoices(conn, ids)
    results: list[Applied] = []
    writes: dict[str, tuple[SubscriptionState | None, SubscriptionState]] = {}
    for snapshot, seen_at in snapshots:
        before = current.get(snapshot.id)
        after = next_subscription_state(
            before, snapshot, seen_at, now=now, grace=grace, unpaid_invoice=unpaid.get(snapshot.id)
        )
        if after is None:
            results.append(Applied(state=before, stale=True, changed=False, before=before))
            continue
        first_before = writes[snapshot.id][0] if snapshot.id in writes else before
        writes[snapshot.id] = (first_before, after)
        current[snapshot.id] = after
        changed = before != after and any(k not in NOT_AUDITED for k in changed_columns(before, after)[1])
        results.append(Applied(state=after, stale=False, changed=changed, before=before))
    planned = [_plan_write(b, a, source=source, source_id=source_id) for b, a in writes.values()]
    _execute_writes(conn, [w for w in planned if w is not None])
    return results


def apply_subscription_snapshot(
    conn: psycopg.Connection[Any],
    snapshot: SubscriptionSnapshot,
    seen_at: datetime,
    *,
    now: datetime,
    grace: timedelta,
    source: str,
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
    source: str,
    source_id: str | None,
) -> Applied:
    """After an invoice changed: the owed amount of a suspended subscription is priced on it.

    Only a suspended subscription's row depends on its invoices, so the others
    are left alone (access moves with time in the scheduler's refresh, not
    here). The caller holds the subscription's lock.
    """
    before = load_subscription(conn, subscription_id)
    if before is None or before.access != Access.SUSPENDED:
        return Applied(state=before, stale=False, changed=False, before=before)
    return _recompute_and_save(conn, before, now=now, grace=grace, source=source, source_id=source_id)


def recompute_subscription(
    conn: psycopg.Connection[Any],
    subscription_id: str,
    *,
    now: datetime,
    grace: timedelta,
    source: str,
    source_id: str | None,
) -> Applied:
    """Recompute the time- and invoice-dependent columns (access, owed_amount)."""
    lock_subscription(conn, subscription_id)
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
    source: str,
    source_id: str | None,
) -> Applied:
    after = recompute(before, now=now, grace=grace, unpaid_invoice=unpaid_invoice(conn, before.id))
    changed = save_subscription(conn, before, after, source=source, source_id=source_id)
    return Applied(state=after, stale=False, changed=changed, before=before)


@dataclass(frozen=True)
class InvoiceWritten:
    """An invoice row written, and whether its subscription is suspended (the one state priced on invoices)."""

    subscription_suspended: bool


def apply_invoice_snapshot(
    conn: psycopg.Connection[Any], snapshot: InvoiceSnapshot, seen_at: datetime
) -> InvoiceWritten | None:
    """Upsert the invoice unless we hold a newer snapshot (or the same). None if nothing was written.

    The upsert also reads its subscription's access, so that the caller
    reprices only a suspended subscription without reading it again.
    """
    before = load_invoice(conn, snapshot.id)
    after = next_invoice_state(before, snapshot, seen_at)
    if after is None or after == before:
        return None
    row = conn.execute(_UPSERT_INVOICE, {column: getattr(after, column) for column in INVOICE_COLUMNS}).fetchone()
    return InvoiceWritten(subscription_suspended=row is not None and row["access"] == Access.SUSPENDED.value)


def record_payment(conn: psycopg.Connection[Any], fact: PaymentFact, event_id: str) -> bool:
    """Add a ledger row unless the fact is recorded already. True if added."""
    row = conn.execute(
        """
        INSERT INTO payments (stripe_event_id, fact_key, customer_id, subscription_id, invoice_id,
                              checkout_session_id, amount, currency, status, occurred_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        RETURNING 1
        """,
        (
            event_id,
            fact.fact_key,
            fact.customer_id,
            fact.subscription_id,
            fact.invoice_id,
            fact.checkout_session_id,
            fact.amount,
            fact.currency,
            fact.status,
            fact.occurred_at,
        ),
    ).fetchone()
    return row is not None


def apply_customer_snapshot(conn: psycopg.Connection[Any], snapshot: CustomerSnapshot, seen_at: datetime) -> bool:
    """Upsert a customer; an older snapshot never overwrites, and deletion is final."""
    row = conn.execute(
        """
        INSERT INTO customers (id, email, name, metadata, deleted, stripe_updated_at)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (id) DO UPDATE
           SET email = EXCLUDED.email, name = EXCLUDED.name, metadata = EXCLUDED.metadata,
               deleted = customers.deleted OR EXCLUDED.deleted,
               stripe_updated_at = EXCLUDED.stripe_updated_at, updated_at = now()
         WHERE customers.stripe_updated_at <= EXCLUDED.stripe_updated_at OR EXCLUDED.deleted
        RETURNING 1
        """,
        (snapshot.id, snapshot.email, snapshot.name, Jsonb(snapshot.metadata or {}), snapshot.deleted, seen_at),
    ).fetchone()
    return row is not None


# --- On-call reads (webhooks/cli, /metrics) ---


def subscription_row(conn: psycopg.Connection[Any], subscription_id: str) -> dict[str, Any] | None:
    """Every column of one subscription, as stored."""
    return conn.execute("SELECT * FROM subscriptions WHERE id = %s", (subscription_id,)).fetchone()


def changes_of_subscription(
    conn: psycopg.Connection[Any], subscription_id: str, limit: int | None = None
) -> list[dict[str, Any]]:
    """The audit trail of one subscription, oldest first (the newest `limit` when given)."""
    rows = conn.execute(
        """
        SELECT * FROM (
            SELECT id, subscription_id, changed_at, source, source_id, before, after
              FROM subscription_changes WHERE subscription_id = %s
             ORDER BY changed_at DESC, id DESC LIMIT %s) newest
         ORDER BY changed_at, id
        """,
        (subscription_id, limit),
    ).fetchall()
    return list(rows)


def changes_by_source(conn: psycopg.Connection[Any], source_id: str) -> list[dict[str, Any]]:
    """The audit rows one event (or run) wrote, oldest first."""
    return conn.execute(
        "SELECT id, subscription_id, changed_at, source, source_id, before, after FROM subscription_changes"
        " WHERE source_id = %s ORDER BY changed_at, id",
        (source_id,),
    ).fetchall()


def payments_of_event(conn: psycopg.Connection[Any], event_id: str) -> list[dict[str, Any]]:
    """The ledger row an event recorded, if any."""
    return conn.execute(
        "SELECT id, fact_key, status, amount, currency, customer_id, subscription_id, invoice_id,"
        " checkout_session_id, occurred_at FROM payments WHERE stripe_event_id = %s",
        (event_id,),
    ).fetchall()


def invoices_of_subscription(
    conn: psycopg.Connection[Any], subscription_id: str, limit: int = 5
) -> list[dict[str, Any]]:
    """The newest invoices of a subscription."""
    return conn.execute(
        """SELECT id, status, amount_due, amount_paid, currency, period_start, period_end, attempt_count,
                  next_payment_attempt, created_at, paid_at
             FROM invoices WHERE subscription_id = %s ORDER BY created_at DESC NULLS LAST, id DESC LIMIT %s""",
        (subscription_id, limit),
    ).fetchall()


def latest_reconciliation(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    """The newest reconciliation run, with the finish time of the newest real (not dry) success."""
    return conn.execute(
        """
        SELECT r.*, (SELECT max(finished_at) FROM reconciliation_runs
                      WHERE status = 'succeeded' AND NOT dry_run) AS last_success_at
          FROM reconciliation_runs r ORDER BY r.id DESC LIMIT 1
        """
    ).fetchone()
