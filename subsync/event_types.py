"""The Stripe event types subsync handles, and what kind of object each carries.

Everything else is stored (every event is, for audit and replay) but marked
`ignored`: `kind_of` returns None for it.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CHECKOUT_EVENTS",
    "CUSTOMER_DELETED",
    "CUSTOMER_EVENTS",
    "DISPUTE_EVENTS",
    "ENTITLEMENT_EVENTS",
    "ENTITLEMENT_SUMMARY_UPDATED",
    "GENERATION_FAILURE_RESOLVED",
    "HANDLED_EVENTS",
    "INVOICE_EVENTS",
    "INVOICE_UPCOMING",
    "PREVIEW_EVENTS",
    "REFUND_EVENTS",
    "SUBSCRIPTION_DELETED",
    "SUBSCRIPTION_EVENTS",
    "THIN_PREFIX",
    "Kind",
    "applies_fetched",
    "is_applied",
    "is_preview",
    "kind_of",
]

Kind = Literal["subscription", "invoice", "checkout", "customer", "entitlements", "refund", "dispute"]

SUBSCRIPTION_DELETED = "customer.subscription.deleted"
SUBSCRIPTION_EVENTS: frozenset[str] = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        SUBSCRIPTION_DELETED,
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.pending_update_applied",
        # Carries the same snapshot as the latest `updated`: harmless to apply.
        "customer.subscription.trial_will_end",
    }
)

INVOICE_UPCOMING = "invoice.upcoming"
INVOICE_EVENTS: frozenset[str] = frozenset(
    {
        "invoice.created",
        "invoice.finalized",
        # e.g. dunning's end: no further attempt (`next_payment_attempt` null).
        "invoice.updated",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "invoice.voided",
        "invoice.marked_uncollectible",
        INVOICE_UPCOMING,
    }
)
# Events whose object is a preview of something that does not exist yet:
# `invoice.upcoming` carries an invoice WITHOUT an id, a forecast Stripe sends a
# few days before a renewal. It must never be stored as an invoice.
PREVIEW_EVENTS: frozenset[str] = frozenset({INVOICE_UPCOMING})

CHECKOUT_EVENTS: frozenset[str] = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.expired",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
    }
)

CUSTOMER_DELETED = "customer.deleted"
CUSTOMER_EVENTS: frozenset[str] = frozenset({"customer.created", "customer.updated", CUSTOMER_DELETED})

# A customer's active entitlements (Stripe lists the first 10 and says `has_more`).
ENTITLEMENT_SUMMARY_UPDATED = "entitlements.active_entitlement_summary.updated"
ENTITLEMENT_EVENTS: frozenset[str] = frozenset({ENTITLEMENT_SUMMARY_UPDATED})

# Money given back: a refund (a charge's `charge.refunded`, whose refunds
# are listed from the API; the refund's own events, `refund.*` from
# 2024-10-28.acacia on, `charge.refund.updated` before). `refund.failed`
# states no fact: a failed refund gave nothing back.
REFUND_EVENTS: frozenset[str] = frozenset(
    {"charge.refunded", "refund.created", "refund.updated", "charge.refund.updated"}
)
# Money at stake: a chargeback opened (`created`; `funds_withdrawn` too, which
# is how an inquiry that escalates shows), and its outcome (`closed`).
DISPUTE_EVENTS: frozenset[str] = frozenset(
    {"charge.dispute.created", "charge.dispute.funds_withdrawn", "charge.dispute.closed"}
)

HANDLED_EVENTS: frozenset[str] = (
    SUBSCRIPTION_EVENTS
    | INVOICE_EVENTS
    | CHECKOUT_EVENTS
    | CUSTOMER_EVENTS
    | ENTITLEMENT_EVENTS
    | REFUND_EVENTS
    | DISPUTE_EVENTS
)

# A thin event's type is its snapshot twin's behind this prefix (`v1.invoice.paid`).
THIN_PREFIX = "v1."
# Stripe's report of an event it failed to generate: applied as the event it names.
GENERATION_FAILURE_RESOLVED = "v2.core.health.event_generation_failure.resolved"

_KINDS: dict[str, Kind] = {
    **dict.fromkeys(SUBSCRIPTION_EVENTS, "subscription"),
    **dict.fromkeys(INVOICE_EVENTS, "invoice"),
    **dict.fromkeys(CHECKOUT_EVENTS, "checkout"),
    **dict.fromkeys(CUSTOMER_EVENTS, "customer"),
    **dict.fromkeys(ENTITLEMENT_EVENTS, "entitlements"),
    **dict.fromkeys(REFUND_EVENTS, "refund"),
    **dict.fromkeys(DISPUTE_EVENTS, "dispute"),
}


def kind_of(event_type: str) -> Kind | None:
    """The kind of object a handled event carries; None for an ignored type.

    A prefix test would be wrong: `customer.subscription.*` starts with
    `customer.`, and `invoice.upcoming` or `invoiceitem.*` are not invoices to
    store. Hence explicit sets.
    """
    return _KINDS.get(event_type)


def is_preview(event_type: str) -> bool:
    """True when the event's object is a forecast, not a stored object (nothing to write)."""
    return event_type in PREVIEW_EVENTS


def applies_fetched(snapshot_type: str) -> bool:
    """True when an object fetched for an event of this snapshot type (a thin event's, a lost event's) is applied.

    A forecast has nothing to fetch: only handled types that name a stored object.
    """
    return snapshot_type in HANDLED_EVENTS and not is_preview(snapshot_type)


def is_applied(event_type: str) -> bool:
    """True when the worker applies an event of this type: a handled snapshot type, its thin twin, or
    Stripe's report of a lost event. The others are stored `ignored` as they arrive, never queued."""
    if event_type == GENERATION_FAILURE_RESOLVED:
        return True
    if event_type.startswith(THIN_PREFIX):
        return applies_fetched(event_type.removeprefix(THIN_PREFIX))
    return event_type in HANDLED_EVENTS
