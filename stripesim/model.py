"""Internal records of the simulator. They are rendered as Stripe JSON by ``shapes``."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

DAY = 86400


class SimError(Exception):
    """An error rendered as a Stripe error body (``{"error": {...}}``)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        doc_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.doc_url = doc_url

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            err["code"] = self.code
        if self.doc_url is not None:
            err["doc_url"] = self.doc_url
        if self.param is not None:
            err["param"] = self.param
        return {"error": err}


def missing(kind: str, ident: str, param: str = "id") -> SimError:
    return SimError(f"No such {kind}: '{ident}'", status=404, code="resource_missing", param=param)


@dataclass(slots=True)
class Price:
    id: str
    product: str
    unit_amount: int
    currency: str
    interval: str  # day, week, month, year
    interval_count: int
    created: int
    nickname: str | None = None
    lookup_key: str | None = None


@dataclass(slots=True)
class Product:
    id: str
    name: str
    created: int


@dataclass(slots=True)
class Customer:
    id: str
    created: int
    email: str | None
    name: str | None
    metadata: dict[str, str]
    invoice_prefix: str
    description: str | None = None
    deleted: bool = False
    next_invoice_sequence: int = 1
    # payment simulation
    fail_remaining: int = 0
    fail_until_new_card: bool = False
    default_payment_method: str | None = None


SUB_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)
LIVE_STATUSES = ("trialing", "active", "past_due", "unpaid", "paused", "incomplete")


@dataclass(slots=True)
class SubItem:
    """A subscription item: one price, its quantity and its own billing period (basil+ shows it per item)."""

    id: str
    price: str
    quantity: int
    created: int
    current_period_start: int
    current_period_end: int
    cycle: int = 0  # periods of its interval elapsed since the subscription's billing_cycle_anchor
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Subscription:
    id: str
    customer: str
    items: list[SubItem]
    status: str
    created: int
    start_date: int
    billing_cycle_anchor: int
    billing_mode: str = "classic"  # or flexible: items may then have different intervals
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    trial_start: int | None = None
    trial_end: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    latest_invoice: str | None = None
    cancellation_reason: str | None = None
    cancellation_comment: str | None = None
    cancellation_feedback: str | None = None
    token: int = 0  # bumps when scheduled actions must be forgotten
    quiet: bool = False  # its timed changes happen without events (bulk populations)

    @property
    def first_to_renew(self) -> SubItem:
        """The item whose period ends first (the first listed among equals)."""
        return min(self.items, key=lambda it: it.current_period_end)

    @property
    def current_period_start(self) -> int:
        """The subscription's period is that of the item that renews first, as pre-basil versions show it."""
        return self.first_to_renew.current_period_start

    @property
    def current_period_end(self) -> int:
        return self.first_to_renew.current_period_end

    @property
    def price(self) -> str:
        return self.items[0].price

    def has_price(self, price: str) -> bool:
        return any(it.price == price for it in self.items)

    def item(self, ident: str) -> SubItem | None:
        return next((it for it in self.items if it.id == ident), None)


@dataclass(slots=True)
class InvoiceLine:
    """One line of a subscription invoice: an item billed for its period, or a pending invoice item."""

    id: str
    subscription_item: str | None
    price: str  # "" on an invoice item's line
    quantity: int
    unit_amount: int
    period_start: int
    period_end: int
    invoice_item: str | None = None
    description: str | None = None
    item_subscription: str | None = None  # the subscription an invoice item was made for

    @property
    def amount(self) -> int:
        return self.unit_amount * self.quantity


@dataclass(slots=True)
class Invoice:
    id: str
    customer: str
    subscription: str | None
    status: str  # draft, open, paid, void, uncollectible
    amount_due: int
    currency: str
    created: int
    billing_reason: str
    period_start: int
    period_end: int
    lines: list[InvoiceLine]
    number: str | None = None
    amount_paid: int = 0
    attempt_count: int = 0
    attempted: bool = False
    auto_advance: bool = True
    next_payment_attempt: int | None = None
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None
    marked_uncollectible_at: int | None = None
    first_failed_at: int | None = None
    retries_done: int = 0
    payment_intent: str | None = None
    charge: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    sub_metadata: dict[str, str] = field(default_factory=dict)
    token: int = 0

    @property
    def amount_remaining(self) -> int:
        if self.status in ("paid", "void"):
            return 0
        return self.amount_due - self.amount_paid


@dataclass(slots=True)
class Account:
    """A connected account (Connect): its objects live in a ledger of their own."""

    id: str
    created: int
    type: str  # standard, express, custom
    country: str
    email: str | None
    business_name: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    deauthorized: bool = False


@dataclass(slots=True)
class CheckoutSession:
    id: str
    mode: str  # payment or subscription
    status: str  # open, complete, expired
    payment_status: str  # unpaid, paid, no_payment_required
    created: int
    expires_at: int
    currency: str
    amount_total: int
    customer: str | None
    customer_email: str | None
    price: str | None
    quantity: int = 1
    subscription: str | None = None
    invoice: str | None = None
    payment_intent: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    trial_days: int | None = None
    success_url: str = "https://example.com/success"
    cancel_url: str = "https://example.com/cancel"


def add_interval(anchor: int, interval: str, count: int, n: int) -> int:
    """The time ``n`` billing intervals after ``anchor``, as Stripe computes it.

    Months and years keep the anchor's day of month, clamped to the month's
    last day (an anchor on Jan 31 bills on Feb 28/29, then Mar 31).
    """
    if interval == "day":
        return anchor + n * count * DAY
    if interval == "week":
        return anchor + n * count * 7 * DAY
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    months = n * count * (12 if interval == "year" else 1)
    base = dt.datetime.fromtimestamp(anchor, tz=dt.UTC)
    total = base.year * 12 + (base.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    day = min(base.day, calendar.monthrange(year, month)[1])
    return int(base.replace(year=year, month=month, day=day).timestamp())


def redact_key(key: str) -> str:
    """An API key as Stripe quotes it in errors: prefix and last four characters, the rest starred."""
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "*" * len(key)
