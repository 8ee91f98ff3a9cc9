"""Reactivate a suspended subscription (subsync.reactivation says what is asked of Stripe), and settle it.

`reactivate` is what `flask --app webhooks subscriptions reactivate` runs
and what an application calls:

1. under the subscription's lock: our row must be suspended and ended,
   with its owed amount known; a `reactivations` row is written (or an
   earlier one found: its objects are reused, nothing is charged again);
2. with no lock held while Stripe answers: the invoice item, then the new
   subscription, each found by its metadata if an earlier run made it,
   else created with its idempotency key;
3. the new subscription's id is recorded, and if its first invoice is
   already paid here (its webhook came first), the debt is settled at once.

`settle` is the one writer of a settlement: the worker calls it when the
new subscription's first invoice is paid, so the old subscription's
`owed_amount` becomes 0 only then, audited with source `reactivate`.
Both subscriptions' locks are held by then, taken together in key order
with the others (subsync.store.locks): here in one statement, and by the
worker and the reconciliation from the invoice, whose subscription's
metadata names the old one (subsync.reactivation.reactivated_by).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool

from subsync import db, logs
from subsync.reactivation import REACTIVATES, Plan, plan
from subsync.store import invoices, reactivations, subscriptions
from subsync.store.locks import lock_subscriptions
from subsync.stripe_api import StripeApi
from subsync.transitions import settled_by_reactivation

__all__ = ["Reactivation", "reactivate", "settle"]

log = logs.get_logger(__name__)


@dataclass(frozen=True)
class Reactivation:
    """What a reactivation did (or, for a dry run, would do)."""

    subscription_id: str
    status: Literal["planned", "created", "settled"]
    customer_id: str
    account: str | None
    owed_amount: int
    currency: str | None
    description: str
    items: list[dict[str, Any]] = field(default_factory=list)
    invoice_item_id: str | None = None
    new_subscription_id: str | None = None
    # An earlier run had made them: this one charged nothing.
    already: bool = False


def reactivate(
    pool: ConnectionPool[Any],
    api: StripeApi | None,
    subscription_id: str,
    *,
    requested_by: str,
    price: str | None = None,
    dry_run: bool = False,
) -> Reactivation:
    """Bring back suspended `subscription_id` (module docstring). Raises NotReactivatable, or what Stripe raises.

    `api` may be None for a dry run only.
    """
    with pool.connection() as conn, conn.transaction():
        lock_subscriptions(conn, [subscription_id])
        earlier = reactivations.load(conn, subscription_id)
        if earlier is not None and earlier.new_subscription_id is not None:
            return _done(earlier, already=True)
        the_plan = _plan(conn, subscription_id, price)
        if dry_run:
            return _result(the_plan, "planned")
        row = reactivations.start(
            conn,
            subscription_id=subscription_id,
            customer_id=the_plan.customer_id,
            account=the_plan.account,
            owed_amount=the_plan.owed_amount,
            currency=the_plan.currency,
            unpaid_invoice_id=the_plan.unpaid_invoice_id,
            description=the_plan.description,
            requested_by=requested_by,
        )
    if api is None:
        msg = "STRIPE_API_KEY is not set: a reactivation creates Stripe objects"
        raise ValueError(msg)
    item_id = row.invoice_item_id
    if item_id is None and the_plan.owed_amount > 0:
        item_id = _invoice_item(api, the_plan)
        db.run(pool, lambda conn: reactivations.record_invoice_item(conn, subscription_id, item_id))
    new_id = _subscription(api, the_plan)
    log.info("reactivation_created", subscription_id=subscription_id, new_subscription_id=new_id)
    with pool.connection() as conn, conn.transaction():
        lock_subscriptions(conn, [new_id, subscription_id])
        reactivations.record_created(conn, subscription_id, new_id)
        paid = invoices.first_paid_invoice(conn, new_id)
        settled = paid is not None and settle(conn, new_id, paid) is not None
    return _result(the_plan, "settled" if settled else "created", item_id=item_id, new_id=new_id)


def settle(conn: psycopg.Connection[Any], new_subscription_id: str, invoice_id: str) -> str | None:
    """The first invoice of `new_subscription_id` is paid: if a reactivation made it, the old one owes nothing more.

    Returns the old subscription's id, or None when there was nothing to
    settle. The caller holds both subscriptions' locks, in a transaction
    (module docstring); the old one's is taken again here, at no cost when
    held, so that a caller without it still writes under it.
    """
    old_id = reactivations.settle(conn, new_subscription_id, invoice_id)
    if old_id is None:
        return None
    lock_subscriptions(conn, [old_id])
    before = subscriptions.load_subscription(conn, old_id)
    if before is not None:
        subscriptions.save_subscription(
            conn, before, settled_by_reactivation(before), source="reactivate", source_id=new_subscription_id
        )
    log.info("reactivation_settled", subscription_id=old_id, new_subscription_id=new_subscription_id)
    return old_id


def _plan(conn: psycopg.Connection[Any], subscription_id: str, price: str | None) -> Plan:
    state = subscriptions.load_subscription(conn, subscription_id)
    if state is None:
        msg = f"no subscription {subscription_id} here"
        raise LookupError(msg)
    items = subscriptions.load_items(conn, [subscription_id]).get(subscription_id, ())
    return plan(state, items, invoices.unpaid_invoice(conn, subscription_id), price=price)


def _invoice_item(api: StripeApi, the_plan: Plan) -> str:
    """The invoice item of the owed amount: the one an earlier run made, else a new one."""
    for page in api.list_pages("/v1/invoiceitems", account=the_plan.account, customer=the_plan.customer_id):
        for snapshot in page:
            if (snapshot.data.get("metadata") or {}).get(REACTIVATES) == the_plan.subscription_id:
                return str(snapshot.data["id"])
    created, _ = api.post(
        "/v1/invoiceitems",
        idempotency_key=the_plan.invoice_item_key,
        account=the_plan.account,
        **the_plan.invoice_item_params(),
    )
    return str(created["id"])


def _subscription(api: StripeApi, the_plan: Plan) -> str:
    """The new subscription: the one an earlier run made, else a new one."""
    pages = api.list_pages("/v1/subscriptions", account=the_plan.account, customer=the_plan.customer_id, status="all")
    for page in pages:
        for snapshot in page:
            if (snapshot.data.get("metadata") or {}).get(REACTIVATES) == the_plan.subscription_id:
                return str(snapshot.data["id"])
    created, _ = api.post(
        "/v1/subscriptions",
        idempotency_key=the_plan.subscription_key,
        account=the_plan.account,
        **the_plan.subscription_params(),
    )
    return str(created["id"])


def _result(
    the_plan: Plan,
    status: Literal["planned", "created", "settled"],
    *,
    item_id: str | None = None,
    new_id: str | None = None,
) -> Reactivation:
    return Reactivation(
        subscription_id=the_plan.subscription_id,
        status=status,
        customer_id=the_plan.customer_id,
        account=the_plan.account,
        owed_amount=the_plan.owed_amount,
        currency=the_plan.currency,
        description=the_plan.description,
        items=[{"price": p, "quantity": q} for p, q in the_plan.items],
        invoice_item_id=item_id,
        new_subscription_id=new_id,
    )


def _done(row: reactivations.ReactivationRow, *, already: bool) -> Reactivation:
    return Reactivation(
        subscription_id=row.subscription_id,
        status="settled" if row.status == "settled" else "created",
        customer_id=row.customer_id,
        account=row.account,
        owed_amount=row.owed_amount,
        currency=row.currency,
        description=row.description,
        invoice_item_id=row.invoice_item_id,
        new_subscription_id=row.new_subscription_id,
        already=already,
    )
