"""Refunds and disputes as ledger facts: money a payment gave back, or put at stake.

    event                                         status         fact_key                  amount
    charge.refunded, refund.created,
      refund.updated, charge.refund.updated       REFUNDED       refund:{re_id}            the refund's
    charge.dispute.created, .funds_withdrawn      DISPUTED       dispute:{du_id}:opened    the dispute's
    charge.dispute.closed, won / lost             DISPUTE_WON /  dispute:{du_id}:closed    the dispute's
                                                  DISPUTE_LOST

One row per refund, recorded once its status is `succeeded` (a pending
refund is no fact yet; a failed one never is), whichever of its events
says so and however often: the refund's own events carry it, a
`charge.refunded` carries the charge, whose refunds the worker lists from
Stripe's API before the event is applied (Stripe has included them in the
charge only with `expand[]=refunds` since 2022-11-15). A dispute is one row
when opened and one when it closes won or lost; a closing event also states
the opening (same key), so a lost `charge.dispute.created` is no hole.

An inquiry (a dispute whose status is `warning_needs_response`,
`warning_under_review` or `warning_closed`) moves no money: it is no fact,
and its `warning_closed` is neither won nor lost. An inquiry that escalates
to a chargeback takes a chargeback's status, and from then on its events
(`charge.dispute.funds_withdrawn` when the money is taken) are facts.

occurred_at: a refund's and an opened dispute's `created`, the same in
every event of them; a close, the closing event's `created` (a dispute
says when it was opened, not when it closed), or for a close the
reconciliation finds without its event, the time of Stripe's answer.

Stripe's refund and dispute objects name only their charge: whose payment
it was (customer, invoice, subscription) is found through the charge
(subsync.payment_links) and passed in as `PaymentLinks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from subsync import event_types
from subsync.ledger import LedgerStatus, PaymentFact
from subsync.stripe_objects import (
    DisputeSnapshot,
    MalformedObject,
    RefundSnapshot,
    parse_charge,
    parse_dispute,
    parse_refund,
)

__all__ = [
    "PaymentLinks",
    "charge_id_of",
    "dispute_closed_fact",
    "dispute_opened_fact",
    "is_inquiry",
    "linked",
    "refund_fact",
    "reversal_facts",
    "stated_key",
]

_OUTCOMES: dict[str, LedgerStatus] = {"won": "DISPUTE_WON", "lost": "DISPUTE_LOST"}
_CLOSED = "charge.dispute.closed"


@dataclass(frozen=True)
class PaymentLinks:
    """Whose payment a charge was: what a refund or a dispute row names besides its charge."""

    customer_id: str | None = None
    invoice_id: str | None = None
    subscription_id: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"customer": self.customer_id, "invoice": self.invoice_id, "subscription": self.subscription_id}

    @classmethod
    def from_json(cls, value: Any) -> PaymentLinks | None:
        if not isinstance(value, Mapping):
            return None

        def text(name: str) -> str | None:
            item = value.get(name)
            return item if isinstance(item, str) and item else None

        return cls(text("customer"), text("invoice"), text("subscription"))


def is_inquiry(dispute: DisputeSnapshot) -> bool:
    return (dispute.status or "").startswith("warning_")


def refund_fact(obj: Mapping[str, Any], links: PaymentLinks, *, account: str | None = None) -> PaymentFact | None:
    """The refund's row once it has succeeded; None while pending, or when it failed or was canceled."""
    refund = parse_refund(obj)
    if refund.status != "succeeded":
        return None
    if refund.created is None:
        raise MalformedObject("refund without 'created'")
    return _fact(f"refund:{refund.id}", "REFUNDED", refund, links, refund.created, account=account)


def dispute_opened_fact(
    obj: Mapping[str, Any], links: PaymentLinks, *, account: str | None = None
) -> PaymentFact | None:
    """A chargeback's row as opened (None for an inquiry)."""
    dispute = parse_dispute(obj)
    if is_inquiry(dispute):
        return None
    if dispute.created is None:
        raise MalformedObject("dispute without 'created'")
    return _fact(f"dispute:{dispute.id}:opened", "DISPUTED", dispute, links, dispute.created, account=account)


def dispute_closed_fact(
    obj: Mapping[str, Any], links: PaymentLinks, closed_at: datetime, *, account: str | None = None
) -> PaymentFact | None:
    """A chargeback's outcome once won or lost; None while open, and for an inquiry."""
    dispute = parse_dispute(obj)
    status = _OUTCOMES.get(dispute.status or "")
    if status is None:
        return None
    return _fact(f"dispute:{dispute.id}:closed", status, dispute, links, closed_at, account=account)


def reversal_facts(
    event_type: str,
    obj: Mapping[str, Any],
    event_created: datetime,
    links: PaymentLinks | None,
    *,
    account: str | None = None,
) -> list[PaymentFact]:
    """The facts a refund or dispute event states; [] for any other event.

    `obj` is the event's object; for `charge.refunded`, a charge whose
    `refunds` list is whole (the worker lists them before applying it; a
    charge without its whole list states nothing). `links`: whose payment
    the charge was (None: unknown, the rows name nobody).
    """
    known = links or PaymentLinks()
    facts: list[PaymentFact | None] = []
    if event_type == "charge.refunded":
        refunds = parse_charge(obj).refunds or ()
        facts = [refund_fact(refund, known, account=account) for refund in refunds]
    elif event_type in event_types.REFUND_EVENTS:
        facts = [refund_fact(obj, known, account=account)]
    elif event_type in event_types.DISPUTE_EVENTS:
        facts = [dispute_opened_fact(obj, known, account=account)]
        if event_type == _CLOSED:
            facts.append(dispute_closed_fact(obj, known, event_created, account=account))
    return [fact for fact in facts if fact is not None]


def stated_key(event_type: str, obj: Mapping[str, Any]) -> str | None:
    """The fact whose row names the event (stripe_event_id is unique: one row per event).

    A `charge.refunded` names no row: its charge does not say which of
    its refunds the event is about.
    """
    ident = obj.get("id") if isinstance(obj, Mapping) else None
    if event_type == "charge.refunded" or not isinstance(ident, str):
        return None
    if event_type in event_types.REFUND_EVENTS:
        return f"refund:{ident}"
    if event_type == _CLOSED:
        return f"dispute:{ident}:closed"
    if event_type in event_types.DISPUTE_EVENTS:
        return f"dispute:{ident}:opened"
    return None


def charge_id_of(event_type: str, obj: Mapping[str, Any]) -> str | None:
    """The charge a refund or dispute event is about: the object itself, or the charge it names."""
    if event_type == "charge.refunded":
        return parse_charge(obj).id
    if event_type in event_types.REFUND_EVENTS:
        return parse_refund(obj).charge_id
    if event_type in event_types.DISPUTE_EVENTS:
        return parse_dispute(obj).charge_id
    return None


def linked(fact: PaymentFact, links: PaymentLinks) -> PaymentFact:
    """`fact` naming whose payment it was."""
    return dataclasses.replace(
        fact, customer_id=links.customer_id, invoice_id=links.invoice_id, subscription_id=links.subscription_id
    )


def _fact(
    key: str,
    status: LedgerStatus,
    obj: RefundSnapshot | DisputeSnapshot,
    links: PaymentLinks,
    occurred_at: datetime,
    *,
    account: str | None,
) -> PaymentFact:
    return PaymentFact(
        fact_key=key,
        customer_id=links.customer_id,
        subscription_id=links.subscription_id,
        invoice_id=links.invoice_id,
        checkout_session_id=None,
        amount=obj.amount,
        currency=obj.currency,
        status=status,
        occurred_at=occurred_at,
        account=account,
    )
