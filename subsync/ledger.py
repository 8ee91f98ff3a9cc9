"""The payment ledger: which Stripe events are payment facts, and their key.

The `payments` table holds one row per FACT, not per event: Stripe sends
`invoice.paid` and `invoice.payment_succeeded` for one payment, repeats an event
under a new id, and redelivers. `fact_key` names the fact, so the I/O layer's
`INSERT ... ON CONFLICT (fact_key) DO NOTHING` keeps exactly one row whatever
the order or number of deliveries:

    invoice.paid / invoice.payment_succeeded     COMPLETED  invoice:{id}:completed       amount_paid
    invoice.payment_failed                       FAILED     invoice:{id}:failed:{n}      amount_due
    checkout.session.completed (paid) or
      .async_payment_succeeded, payment mode     COMPLETED  checkout:{id}:completed      amount_total
    checkout.session.async_payment_failed        FAILED     checkout:{id}:failed         amount_total or 0
    checkout.session.expired                     EXPIRED    checkout:{id}:expired        amount_total or 0
    customer.subscription.deleted                CANCELLED  subscription:{id}:cancelled  0

`{n}` is the invoice's `attempt_count`: each failed attempt is its own fact.
Refunds and disputes (REFUNDED, DISPUTED, DISPUTE_WON, DISPUTE_LOST) are
facts of the same table, stated by subsync.reversals: their objects name only
a charge, and whose payment it was is fetched before they are applied.

occurred_at, chosen so that both events of one fact give the same time when
Stripe says when it happened, whichever row wins the insert:
* a paid invoice: `status_transitions.paid_at` (identical in both events);
* a cancellation: the subscription's `ended_at` (else `canceled_at`);
* otherwise (a failed attempt, a checkout outcome) the object carries no time
  of the fact, so the event's `created`, which is when Stripe recorded it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from subsync.stripe_objects import (
    InvoiceSnapshot,
    parse_checkout_session,
    parse_invoice,
    parse_subscription,
)

__all__ = ["LedgerStatus", "PaymentFact", "facts_implied_by_invoice", "facts_implied_by_subscription", "ledger_fact"]

LedgerStatus = Literal[
    "COMPLETED", "FAILED", "EXPIRED", "CANCELLED", "REFUNDED", "DISPUTED", "DISPUTE_WON", "DISPUTE_LOST"
]


@dataclass(frozen=True)
class PaymentFact:
    """One row of `payments`, less `id` and `stripe_event_id` (the caller's)."""

    fact_key: str
    customer_id: str | None
    subscription_id: str | None
    invoice_id: str | None
    checkout_session_id: str | None
    amount: int
    currency: str | None
    status: LedgerStatus
    occurred_at: datetime
    account: str | None = None  # the connected account whose payment it is; None: the platform's


_INVOICE_COMPLETED = frozenset({"invoice.paid", "invoice.payment_succeeded"})


def ledger_fact(
    event_type: str, obj: Mapping[str, Any], event_created: datetime, *, account: str | None = None
) -> PaymentFact | None:
    """The payment fact an event states, or None if it states none.

    `obj` is the event's `data.object`; `event_created` its `created` as an
    aware datetime; `account` the event's connected account. Raises
    MalformedObject for an object without an id.
    """
    fact = _fact(event_type, obj, event_created)
    return fact if fact is None or account is None else dataclasses.replace(fact, account=account)


def facts_implied_by_invoice(
    obj: Mapping[str, Any], seen_at: datetime, *, account: str | None = None
) -> list[PaymentFact]:
    """The facts an invoice's state implies, whatever events told of it (or none did).

    Paid: its payment, and a failed attempt for each attempt before the one
    that paid. Open, uncollectible or void: a failed attempt for each
    attempt made. For an invoice read from Stripe's API (a reconciliation, a
    thin event): the keys are the events', so a fact already recorded from
    its event is never recorded twice. A failed attempt's time is unknown
    from the invoice alone: `seen_at` stands for it.
    """
    inv = parse_invoice(obj)
    paid = inv.status == "paid"
    failed_attempts = inv.attempt_count - 1 if paid else inv.attempt_count
    facts = [_invoice_failed(inv, attempt, seen_at) for attempt in range(1, failed_attempts + 1)]
    if paid:
        facts.append(_invoice_completed(inv, seen_at))
    return [fact if account is None else dataclasses.replace(fact, account=account) for fact in facts]


def facts_implied_by_subscription(
    obj: Mapping[str, Any], seen_at: datetime, *, account: str | None = None
) -> list[PaymentFact]:
    """A canceled subscription's cancellation, under the key its `customer.subscription.deleted` gives.

    For a subscription read from Stripe's API: a deletion whose event was
    lost still reaches the ledger, and one recorded from its event is never
    recorded twice. `seen_at` stands for the time only when the object has
    neither `ended_at` nor `canceled_at`.
    """
    if obj.get("status") != "canceled":
        return []
    fact = ledger_fact("customer.subscription.deleted", obj, seen_at, account=account)
    return [] if fact is None else [fact]


def _invoice_completed(inv: InvoiceSnapshot, event_created: datetime) -> PaymentFact:
    return PaymentFact(
        fact_key=f"invoice:{inv.id}:completed",
        customer_id=inv.customer_id,
        subscription_id=inv.subscription_id,
        invoice_id=inv.id,
        checkout_session_id=None,
        amount=inv.amount_paid,
        currency=inv.currency,
        status="COMPLETED",
        occurred_at=inv.paid_at or event_created,
    )


def _invoice_failed(inv: InvoiceSnapshot, attempt: int, occurred_at: datetime) -> PaymentFact:
    return PaymentFact(
        fact_key=f"invoice:{inv.id}:failed:{attempt}",
        customer_id=inv.customer_id,
        subscription_id=inv.subscription_id,
        invoice_id=inv.id,
        checkout_session_id=None,
        amount=inv.amount_due,
        currency=inv.currency,
        status="FAILED",
        occurred_at=occurred_at,
    )


def _fact(event_type: str, obj: Mapping[str, Any], event_created: datetime) -> PaymentFact | None:
    if event_type in _INVOICE_COMPLETED:
        return _invoice_completed(parse_invoice(obj), event_created)
    if event_type == "invoice.payment_failed":
        inv = parse_invoice(obj)
        return _invoice_failed(inv, inv.attempt_count, event_created)
    if event_type.startswith("checkout.session."):
        return _checkout_fact(event_type, obj, event_created)
    if event_type == "customer.subscription.deleted":
        sub = parse_subscription(obj)
        return PaymentFact(
            fact_key=f"subscription:{sub.id}:cancelled",
            customer_id=sub.customer_id,
            subscription_id=sub.id,
            invoice_id=None,
            checkout_session_id=None,
            amount=0,
            currency=sub.currency,
            status="CANCELLED",
            occurred_at=sub.ended_at or sub.canceled_at or event_created,
        )
    return None


def _checkout_fact(event_type: str, obj: Mapping[str, Any], event_created: datetime) -> PaymentFact | None:
    """Checkout outcomes. A `completed` session in `subscription` mode is no
    payment fact: its first invoice's `invoice.paid` is. A `completed` session
    whose payment is still pending (`payment_status` "unpaid", a delayed method)
    is no fact yet: `async_payment_succeeded`/`failed` follows."""
    cs = parse_checkout_session(obj)
    status: LedgerStatus
    if event_type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        if cs.mode != "payment":
            return None
        if event_type == "checkout.session.completed" and cs.payment_status != "paid":
            return None
        status, suffix = "COMPLETED", "completed"
    elif event_type == "checkout.session.async_payment_failed":
        status, suffix = "FAILED", "failed"
    elif event_type == "checkout.session.expired":
        status, suffix = "EXPIRED", "expired"
    else:
        return None
    return PaymentFact(
        fact_key=f"checkout:{cs.id}:{suffix}",
        customer_id=cs.customer_id,
        subscription_id=cs.subscription_id,
        invoice_id=cs.invoice_id,
        checkout_session_id=cs.id,
        amount=cs.amount_total or 0,
        currency=cs.currency,
        status=status,
        occurred_at=event_created,
    )
