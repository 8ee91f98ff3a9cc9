"""Bringing back a suspended customer: what to ask Stripe for, decided from our rows alone (no I/O).

A subscription that dunning ended (`suspended`) cannot be revived in
Stripe: a canceled subscription stays canceled. The customer comes back
on a NEW subscription, without a trial, and pays for the days they used
and never paid (`owed_amount`) on its first invoice:

1. an invoice item of `owed_amount` for the customer, its description
   naming the old subscription and the days (a pending item is taken into
   the customer's next subscription invoice);
2. a subscription on the same prices (or the one asked for) with
   `trial_end=now`: its first invoice charges the new period and the item.

Each request carries an idempotency key derived from the old
subscription (and what is asked), and each object the old subscription's id in its metadata
(`REACTIVATES`): run twice, by two people at once, or again after a
crash, it finds or makes the same two objects and charges once.
subsync.reactivate does the I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from subsync.access import TERMINAL_STATUSES, Access
from subsync.logs import Loggable
from subsync.stripe_objects import ItemSnapshot
from subsync.transitions import InvoiceState, SubscriptionState

__all__ = ["REACTIVATES", "NotReactivatable", "Plan", "days_used", "plan", "reactivated_by"]

# The metadata key naming, on the invoice item and the new subscription, the subscription they reactivate.
REACTIVATES = "subsync_reactivates"
_DAY = timedelta(days=1)


class NotReactivatable(Loggable, Exception):
    """This subscription cannot be reactivated (yet); the message says why and what to do."""


@dataclass(frozen=True)
class Plan:
    """The two requests a reactivation makes."""

    subscription_id: str  # the suspended one
    customer_id: str
    account: str | None
    currency: str | None
    owed_amount: int  # the invoice item's amount; 0: no item
    unpaid_invoice_id: str | None
    description: str
    items: tuple[tuple[str, int], ...]  # the new subscription's (price, quantity)

    # Stripe refuses a key sent again with other parameters: a second run
    # asking for another price is a request of its own (the new subscription
    # is still found by its metadata first, so it is never made twice).
    @property
    def invoice_item_key(self) -> str:
        return f"subsync-reactivate-{self.subscription_id}-invoiceitem-{self.owed_amount}"

    @property
    def subscription_key(self) -> str:
        prices = ",".join(f"{price}x{quantity}" for price, quantity in self.items)
        return (
            f"subsync-reactivate-{self.subscription_id}-subscription-{hashlib.sha256(prices.encode()).hexdigest()[:16]}"
        )

    def invoice_item_params(self) -> dict[str, object]:
        return {
            "customer": self.customer_id,
            "amount": self.owed_amount,
            "currency": self.currency,
            "description": self.description,
            "metadata": {REACTIVATES: self.subscription_id},
        }

    def subscription_params(self) -> dict[str, object]:
        return {
            "customer": self.customer_id,
            "items": [{"price": price, "quantity": quantity} for price, quantity in self.items],
            "trial_end": "now",
            "metadata": {REACTIVATES: self.subscription_id},
        }


def reactivated_by(invoice: Mapping[str, Any]) -> str | None:
    """The subscription this invoice's subscription reactivates, as its metadata says; None for any other.

    Stripe copies the subscription's metadata onto each invoice it makes
    (`parent.subscription_details.metadata`, basil+; `subscription_details.metadata`
    before), so the invoice itself names the old subscription its payment settles.
    """
    parent = invoice.get("parent")
    holder = parent if isinstance(parent, Mapping) else invoice
    details = holder.get("subscription_details")
    metadata = details.get("metadata") if isinstance(details, Mapping) else None
    old = metadata.get(REACTIVATES) if isinstance(metadata, Mapping) else None
    return old if isinstance(old, str) and old else None


def days_used(unpaid: InvoiceState | None, access_ended_at: datetime | None) -> int:
    """Whole days (half up) of the unpaid period used before access ended; 0 when unknown."""
    if unpaid is None or unpaid.period_start is None or unpaid.period_end is None or access_ended_at is None:
        return 0
    used = min(max(access_ended_at - unpaid.period_start, timedelta(0)), unpaid.period_end - unpaid.period_start)
    return int((used + _DAY / 2) // _DAY)


def plan(
    state: SubscriptionState,
    items: Sequence[ItemSnapshot],
    unpaid: InvoiceState | None,
    *,
    price: str | None = None,
) -> Plan:
    """What reactivating `state` asks of Stripe; raises NotReactivatable when it cannot be done.

    Only an ENDED suspended subscription: an `unpaid` one is still alive
    in Stripe, and comes back by paying its open invoice. The owed amount
    must be known (its unpaid invoice has reached us): reactivating before
    would charge nothing for the days used.
    """
    if state.access != Access.SUSPENDED:
        msg = f"{state.id} is not suspended (its access is {state.access.value}): nothing to reactivate"
        raise NotReactivatable(msg)
    if state.status not in TERMINAL_STATUSES:
        msg = (
            f"{state.id} is {state.status}, not ended: it comes back when its open invoice is paid"
            " (Stripe retries it; a new card does it at once)"
        )
        raise NotReactivatable(msg)
    if state.owed_amount is None:
        msg = f"{state.id} has no owed amount yet (its unpaid invoice has not reached us): run `reconcile run` first"
        raise NotReactivatable(msg)
    if state.customer_id is None:
        msg = f"{state.id} names no customer"
        raise NotReactivatable(msg)
    new_items = ((price, 1),) if price else tuple((i.price_id, i.quantity or 1) for i in items if i.price_id)
    if not new_items and state.price_id:
        new_items = ((state.price_id, 1),)
    if not new_items:
        msg = f"{state.id} has no price to reactivate on: give --price"
        raise NotReactivatable(msg)
    ended = state.ended_at or state.canceled_at
    days = days_used(unpaid, ended)
    period = ""
    if unpaid is not None and unpaid.period_start is not None and ended is not None:
        period = f" from {unpaid.period_start:%Y-%m-%d} to {ended:%Y-%m-%d}"
    return Plan(
        subscription_id=state.id,
        customer_id=state.customer_id,
        account=state.account,
        currency=state.currency or (unpaid.currency if unpaid else None),
        owed_amount=state.owed_amount,
        unpaid_invoice_id=None if unpaid is None else unpaid.id,
        description=f"Unpaid use of {state.id}: {days} day{'' if days == 1 else 's'}{period}",
        items=new_items,
    )
