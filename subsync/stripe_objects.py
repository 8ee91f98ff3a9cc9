"""Stripe JSON (any API version) -> the few values subsync stores.

Stripe changed where things live in API version 2025-03-31 ("basil"):

* the subscription's current period moved from the subscription
  (`current_period_start/end`) to each item (`items.data[].current_period_*`);
* an invoice's subscription moved from `invoice.subscription` to
  `invoice.parent.subscription_details.subscription`, and its lines' link from
  `line.subscription`/`subscription_item`/`type == "subscription"` to
  `line.parent.subscription_item_details`.

Events keep the API version of the endpoint that received them, and the
reconciler's API answers have the version of the client, so both shapes arrive
side by side: every parser here reads the old place first and falls back to the
new one. Payloads are read with `.get` everywhere because fields come and go
between versions; only an object without the fields that identify it (`id`,
and `status` for subscriptions and invoices) is refused, with
`MalformedObject`, because nothing sensible can be stored for it.

Expandable references (`customer`, `latest_invoice`, `subscription`, ...) may
be a string id or an expanded object; `_ref_id` reads both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from subsync.logs import Loggable

__all__ = [
    "ChargeSnapshot",
    "CheckoutSnapshot",
    "CustomerSnapshot",
    "DisputeSnapshot",
    "Entitlement",
    "EntitlementSummary",
    "InvoiceSnapshot",
    "ItemSnapshot",
    "MalformedObject",
    "RefundSnapshot",
    "SubscriptionSnapshot",
    "entitlement_set",
    "parse_active_entitlement",
    "parse_charge",
    "parse_checkout_session",
    "parse_customer",
    "parse_dispute",
    "parse_entitlement_summary",
    "parse_invoice",
    "parse_refund",
    "parse_subscription",
    "previous_entitlements",
    "summary_customer_id",
    "ts",
]


class MalformedObject(Loggable, ValueError):
    """A Stripe object lacks a field without which it cannot be stored, or holds one of the wrong kind.

    Permanent: the same payload fails the same way on every attempt. The
    message names the field, never its value.
    """


def ts(value: int | None) -> datetime | None:
    """Stripe's unix seconds -> timezone-aware UTC datetime (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedObject(f"a time that is not a unix timestamp (a {type(value).__name__})")
    return datetime.fromtimestamp(int(value), tz=UTC)


@dataclass(frozen=True)
class ItemSnapshot:
    """One item of a subscription: its price and its own current period (before basil, the subscription's)."""

    id: str
    price_id: str | None
    product_id: str | None
    quantity: int | None
    current_period_start: datetime | None
    current_period_end: datetime | None


@dataclass(frozen=True)
class SubscriptionSnapshot:
    """One subscription as Stripe showed it at one moment.

    `metadata` is a fresh dict (not the payload's): treat it as read-only.
    `account` is the connected account it belongs to (None: the platform's
    own); Stripe's objects do not say, the event or the API call does.
    """

    id: str
    customer_id: str | None
    status: str
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    trial_end: datetime | None
    price_id: str | None
    currency: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    latest_invoice_id: str | None = None
    cancellation_reason: str | None = None
    livemode: bool = False
    account: str | None = None
    items: tuple[ItemSnapshot, ...] = ()


@dataclass(frozen=True)
class InvoiceSnapshot:
    """One invoice as Stripe showed it; `period_*` is the service period billed."""

    id: str
    subscription_id: str | None
    customer_id: str | None
    status: str
    amount_due: int
    amount_paid: int
    currency: str | None
    period_start: datetime | None
    period_end: datetime | None
    attempt_count: int
    next_payment_attempt: datetime | None
    created_at: datetime | None
    paid_at: datetime | None
    account: str | None = None


@dataclass(frozen=True)
class CheckoutSnapshot:
    """The parts of a Checkout Session the ledger and the links need."""

    id: str
    mode: str | None
    status: str | None
    payment_status: str | None
    customer_id: str | None
    subscription_id: str | None
    invoice_id: str | None
    amount_total: int | None
    currency: str | None


@dataclass(frozen=True)
class CustomerSnapshot:
    """A customer; `deleted` for Stripe's deleted-customer stub or when told."""

    id: str
    email: str | None
    name: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    account: str | None = None


def parse_subscription(obj: Mapping[str, Any], *, account: str | None = None) -> SubscriptionSnapshot:
    """Read a subscription of either API shape.

    Current period: the top-level `current_period_start/end` before basil
    (every item shares it); from basil on, each item carries its own, and
    the subscription's is that of the item whose period ends first: its
    renewal is the next one, the one whose confirmation grace waits for (a
    monthly base with a yearly add-on renews monthly). `price_id` is the
    first item's price.

    A subscription always has items and a current period, in one place or
    the other: a snapshot without them is malformed, not a subscription
    whose period and price were removed, and must never be applied.
    """
    sub_id = _required(obj, "id", "subscription")
    status = _required(obj, "status", "subscription")
    if not isinstance(obj.get("items"), Mapping):
        raise MalformedObject("subscription without 'items'")
    raw_items = _list_data(obj.get("items"))
    shared_start, shared_end = ts(obj.get("current_period_start")), ts(obj.get("current_period_end"))
    items = tuple(_item(raw, shared_start, shared_end) for raw in raw_items)

    period_start, period_end = shared_start, shared_end
    if period_end is None:
        dated = [item for item in items if item.current_period_end is not None]
        if dated:
            renews_first = min(dated, key=lambda item: (item.current_period_end, item.id))
            period_start, period_end = renews_first.current_period_start, renews_first.current_period_end
    if period_end is None:
        raise MalformedObject(
            "subscription without 'current_period_end', neither on the subscription (before basil)"
            " nor on an item (basil and later)"
        )

    first = raw_items[0] if raw_items else {}
    price_id = (
        _ref_id(first.get("price"))
        or _ref_id(first.get("plan"))
        or _ref_id(obj.get("price"))
        or _ref_id(obj.get("plan"))
    )
    currency = obj.get("currency") or _currency_of(first) or _currency_of(obj)
    details = obj.get("cancellation_details")
    return SubscriptionSnapshot(
        id=sub_id,
        customer_id=_ref_id(obj.get("customer")),
        status=status,
        current_period_start=period_start,
        current_period_end=period_end,
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        cancel_at=ts(obj.get("cancel_at")),
        canceled_at=ts(obj.get("canceled_at")),
        ended_at=ts(obj.get("ended_at")),
        trial_end=ts(obj.get("trial_end")),
        price_id=price_id,
        currency=currency,
        metadata=dict(obj.get("metadata") or {}),
        latest_invoice_id=_ref_id(obj.get("latest_invoice")),
        cancellation_reason=details.get("reason") if isinstance(details, Mapping) else None,
        livemode=bool(obj.get("livemode")),
        account=account,
        items=items,
    )


def _item(raw: Mapping[str, Any], shared_start: datetime | None, shared_end: datetime | None) -> ItemSnapshot:
    price = raw.get("price") if raw.get("price") is not None else raw.get("plan")
    quantity = raw.get("quantity")
    return ItemSnapshot(
        id=_required(raw, "id", "subscription item"),
        price_id=_ref_id(price),
        product_id=_ref_id(price.get("product")) if isinstance(price, Mapping) else None,
        quantity=quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None,
        current_period_start=ts(raw.get("current_period_start")) or shared_start,
        current_period_end=ts(raw.get("current_period_end")) or shared_end,
    )


def parse_invoice(obj: Mapping[str, Any], *, account: str | None = None) -> InvoiceSnapshot:
    """Read an invoice of either API shape.

    `period_start/period_end` are the SERVICE period billed: the period of the
    invoice's subscription line (the non-proration one with the latest end,
    when there are several). The invoice-level `period_start/end` is only a
    fallback, used for invoices without a subscription line (one-off
    invoices), because on a renewal Stripe sets it to the period that just
    ENDED (the window in which usage and invoice items accrued), not the one
    being paid for; owed_amount needs the latter.

    An `invoice.upcoming` preview has no `id`: it raises MalformedObject, on
    purpose, as it must never be stored as an invoice.
    """
    inv_id = _required(obj, "id", "invoice")
    status = _required(obj, "status", "invoice")
    line = _subscription_line(_list_data(obj.get("lines")))
    period = line.get("period") if line else None
    if isinstance(period, Mapping) and period.get("end") is not None:
        period_start, period_end = period.get("start"), period.get("end")
    else:
        period_start, period_end = obj.get("period_start"), obj.get("period_end")

    transitions = obj.get("status_transitions")
    paid_at = transitions.get("paid_at") if isinstance(transitions, Mapping) else None
    return InvoiceSnapshot(
        id=inv_id,
        subscription_id=_invoice_subscription_id(obj, line),
        customer_id=_ref_id(obj.get("customer")),
        status=status,
        # Stripe always sends both (non-nullable integers); 0 only for
        # hand-made payloads, so a missing amount never crashes a worker.
        amount_due=_integer(obj, "amount_due", "invoice"),
        amount_paid=_integer(obj, "amount_paid", "invoice"),
        currency=obj.get("currency"),
        period_start=ts(period_start),
        period_end=ts(period_end),
        attempt_count=_integer(obj, "attempt_count", "invoice"),
        next_payment_attempt=ts(obj.get("next_payment_attempt")),
        created_at=ts(obj.get("created")),
        paid_at=ts(paid_at),
        account=account,
    )


def invoice_subscription_id(obj: Mapping[str, Any]) -> str | None:
    """The invoice's subscription as parse_invoice finds it, without reading the rest."""
    return _invoice_subscription_id(obj, _subscription_line(_list_data(obj.get("lines"))))


def parse_checkout_session(obj: Mapping[str, Any]) -> CheckoutSnapshot:
    """Read a Checkout Session.

    Only `id` is required: `status` did not exist in older API versions (the
    ledger decides on `mode` and `payment_status`).
    """
    amount_total = obj.get("amount_total")
    return CheckoutSnapshot(
        id=_required(obj, "id", "checkout session"),
        mode=obj.get("mode"),
        status=obj.get("status"),
        payment_status=obj.get("payment_status"),
        customer_id=_ref_id(obj.get("customer")),
        subscription_id=_ref_id(obj.get("subscription")),
        invoice_id=_ref_id(obj.get("invoice")),
        amount_total=None if amount_total is None else _integer(obj, "amount_total", "checkout session"),
        currency=obj.get("currency"),
    )


def parse_customer(obj: Mapping[str, Any], *, deleted: bool = False, account: str | None = None) -> CustomerSnapshot:
    """Read a customer, or Stripe's `{"id", "deleted": true}` stub.

    A `customer.deleted` event carries the full customer WITHOUT `deleted`:
    the caller passes `deleted=True` for that event type.
    """
    return CustomerSnapshot(
        id=_required(obj, "id", "customer"),
        email=obj.get("email"),
        name=obj.get("name"),
        metadata=dict(obj.get("metadata") or {}),
        deleted=deleted or obj.get("deleted") is True,
        account=account,
    )


@dataclass(frozen=True)
class ChargeSnapshot:
    """The parts of a charge that say whose payment it was.

    `invoice_named`: the shape has an `invoice` field (before basil); from
    basil on a charge does not say its invoice, its payment intent's
    InvoicePayment does. `refunds`: the charge's refunds when the object
    carries the whole list (before 2022-11-15, or with `expand[]=refunds`
    and no `has_more`), else None.
    """

    id: str
    customer_id: str | None
    payment_intent_id: str | None
    invoice_id: str | None
    invoice_named: bool
    currency: str | None
    refunds: tuple[Mapping[str, Any], ...] | None


@dataclass(frozen=True)
class RefundSnapshot:
    id: str
    charge_id: str | None
    amount: int
    currency: str | None
    status: str | None
    created: datetime | None


@dataclass(frozen=True)
class DisputeSnapshot:
    id: str
    charge_id: str | None
    amount: int
    currency: str | None
    status: str | None
    created: datetime | None


def parse_charge(obj: Mapping[str, Any]) -> ChargeSnapshot:
    listed = obj.get("refunds") if isinstance(obj, Mapping) else None
    refunds = None
    if isinstance(listed, Mapping) and isinstance(listed.get("data"), list) and listed.get("has_more") is not True:
        refunds = tuple(_list_data(listed))
    return ChargeSnapshot(
        id=_required(obj, "id", "charge"),
        customer_id=_ref_id(obj.get("customer")),
        payment_intent_id=_ref_id(obj.get("payment_intent")),
        invoice_id=_ref_id(obj.get("invoice")),
        invoice_named="invoice" in obj,
        currency=obj.get("currency"),
        refunds=refunds,
    )


def parse_refund(obj: Mapping[str, Any]) -> RefundSnapshot:
    return RefundSnapshot(
        id=_required(obj, "id", "refund"),
        charge_id=_ref_id(obj.get("charge")),
        amount=_integer(obj, "amount", "refund"),
        currency=obj.get("currency"),
        status=obj.get("status"),
        created=ts(obj.get("created")),
    )


def parse_dispute(obj: Mapping[str, Any]) -> DisputeSnapshot:
    return DisputeSnapshot(
        id=_required(obj, "id", "dispute"),
        charge_id=_ref_id(obj.get("charge")),
        amount=_integer(obj, "amount", "dispute"),
        currency=obj.get("currency"),
        status=obj.get("status"),
        created=ts(obj.get("created")),
    )


@dataclass(frozen=True, order=True)
class Entitlement:
    """One active entitlement: a feature the customer may use, by id and lookup key, and Stripe's ent_ id."""

    feature_id: str
    lookup_key: str
    id: str | None = None


@dataclass(frozen=True)
class EntitlementSummary:
    """A customer's active entitlements as one summary showed them.

    `entitlements`: one per feature, in feature id order, so equal sets
    compare equal. `has_more`: Stripe cut the list short (it shows 10); the
    rest is listed from its API before the summary is applied.
    """

    customer_id: str
    entitlements: tuple[Entitlement, ...]
    has_more: bool = False
    account: str | None = None


def parse_active_entitlement(obj: Mapping[str, Any]) -> Entitlement:
    """Read an `entitlements.active_entitlement` (its `feature` an id or an expanded feature)."""
    feature_id = _ref_id(_required(obj, "feature", "active entitlement"))
    if feature_id is None:
        raise MalformedObject("active entitlement whose 'feature' is neither an id nor a feature")
    lookup_key = _required(obj, "lookup_key", "active entitlement")
    if not isinstance(lookup_key, str):
        raise MalformedObject("active entitlement whose 'lookup_key' is not a string")
    ident = obj.get("id")
    return Entitlement(feature_id=feature_id, lookup_key=lookup_key, id=ident if isinstance(ident, str) else None)


def entitlement_set(entitlements: Iterable[Entitlement]) -> tuple[Entitlement, ...]:
    """One entitlement per feature (the first listed), in feature id order."""
    by_feature: dict[str, Entitlement] = {}
    for entitlement in entitlements:
        by_feature.setdefault(entitlement.feature_id, entitlement)
    return tuple(sorted(by_feature.values()))


def summary_customer_id(obj: Mapping[str, Any]) -> str | None:
    """The customer of an `entitlements.active_entitlement_summary` (it has no id of its own), if it names one."""
    return _ref_id(obj.get("customer")) if isinstance(obj, Mapping) else None


def previous_entitlements(previous_attributes: Any) -> tuple[Entitlement, ...] | None:
    """The set a summary event says came before it (`previous_attributes.entitlements`), when it says it whole.

    None when it does not say, or shows only part of it (`has_more`).
    """
    if not isinstance(previous_attributes, Mapping):
        return None
    listed = previous_attributes.get("entitlements")
    if not isinstance(listed, Mapping) or not isinstance(listed.get("data"), list) or listed.get("has_more") is True:
        return None
    return entitlement_set(parse_active_entitlement(entry) for entry in _list_data(listed))


def parse_entitlement_summary(obj: Mapping[str, Any], *, account: str | None = None) -> EntitlementSummary:
    """Read an `entitlements.active_entitlement_summary`: its customer and the entitlements its list shows."""
    customer_id = _ref_id(_required(obj, "customer", "entitlement summary"))
    if customer_id is None:
        raise MalformedObject("entitlement summary whose 'customer' is neither an id nor a customer")
    listed = obj.get("entitlements")
    if not isinstance(listed, Mapping) or not isinstance(listed.get("data"), list):
        raise MalformedObject("entitlement summary without an 'entitlements' list")
    return EntitlementSummary(
        customer_id=customer_id,
        entitlements=entitlement_set(parse_active_entitlement(entry) for entry in _list_data(listed)),
        has_more=listed.get("has_more") is True,
        account=account,
    )


def _required(obj: Mapping[str, Any], name: str, what: str) -> Any:
    """The field `name`, or MalformedObject naming it."""
    if not isinstance(obj, Mapping):
        raise MalformedObject(f"{what}: expected a JSON object, got {type(obj).__name__}")
    value = obj.get(name)
    if value is None or value == "":
        raise MalformedObject(f"{what} without {name!r}")
    return value


def _integer(obj: Mapping[str, Any], name: str, what: str) -> int:
    """An integer field (0 when absent or null), or MalformedObject naming it."""
    value = obj.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedObject(f"{what} whose {name!r} is not an integer")
    return value


def _ref_id(value: Any) -> str | None:
    """The id of an expandable reference: a string id or an expanded object."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) else None
    return None


def _list_data(value: Any) -> list[Mapping[str, Any]]:
    """The `data` of a Stripe list object (missing or odd -> empty)."""
    if isinstance(value, Mapping):
        data = value.get("data")
        if isinstance(data, list):
            return [entry for entry in data if isinstance(entry, Mapping)]
    return []


def _currency_of(holder: Mapping[str, Any]) -> str | None:
    """Currency of an item's (or old subscription's) price or plan."""
    for key in ("price", "plan"):
        inner = holder.get(key)
        currency = inner.get("currency") if isinstance(inner, Mapping) else None
        if isinstance(currency, str):
            return currency
    return None


def _line_subscription_details(line: Mapping[str, Any]) -> Mapping[str, Any] | None:
    parent = line.get("parent")
    if isinstance(parent, Mapping):
        details = parent.get("subscription_item_details")
        if isinstance(details, Mapping):
            return details
    return None


def _is_subscription_line(line: Mapping[str, Any]) -> bool:
    """Whether a line bills the subscription (old or basil shape)."""
    if line.get("type") == "subscription":
        return True
    if line.get("subscription") or line.get("subscription_item"):
        return True
    parent = line.get("parent")
    if isinstance(parent, Mapping) and parent.get("type") == "subscription_item_details":
        return True
    return _line_subscription_details(line) is not None


def _is_proration(line: Mapping[str, Any]) -> bool:
    details = _line_subscription_details(line)
    if details is not None and details.get("proration"):
        return True
    return bool(line.get("proration"))


def _subscription_line(lines: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The line whose period is the service period billed.

    Prefer regular lines over prorations (a proration covers only part of a
    period), then the latest period end.
    """
    candidates = [line for line in lines if _is_subscription_line(line)]
    if not candidates:
        return None
    regular = [line for line in candidates if not _is_proration(line)] or candidates

    def end_of(line: Mapping[str, Any]) -> int:
        period = line.get("period")
        end = period.get("end") if isinstance(period, Mapping) else None
        return end if isinstance(end, int) else -1

    return max(regular, key=end_of)


def _invoice_subscription_id(obj: Mapping[str, Any], line: Mapping[str, Any] | None) -> str | None:
    """`invoice.subscription` (old), `parent.subscription_details` (basil+),
    else the subscription line's own link."""
    sub_id = _ref_id(obj.get("subscription"))
    if sub_id:
        return sub_id
    parent = obj.get("parent")
    if isinstance(parent, Mapping):
        details = parent.get("subscription_details")
        if isinstance(details, Mapping):
            sub_id = _ref_id(details.get("subscription"))
            if sub_id:
                return sub_id
    if line is not None:
        details = _line_subscription_details(line)
        if details is not None and _ref_id(details.get("subscription")):
            return _ref_id(details.get("subscription"))
        return _ref_id(line.get("subscription"))
    return None
