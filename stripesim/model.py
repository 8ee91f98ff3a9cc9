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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            err["code"] = self.code
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


@dataclass(slots=True)
class Subscription:
    id: str
    customer: str
    price: str
    item_id: str
    status: str
    created: int
    start_date: int
    billing_cycle_anchor: int
    current_period_start: int
    current_period_end: int
    cycle: int = 0  # periods elapsed since billing_cycle_anchor
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
    quantity: int = 1
    token: int = 0  # bumps when scheduled actions must be forgotten
    quiet: bool = False  # its timed changes happen without events (bulk populations)


@dataclass(slots=True)
class Invoice:
    id: str
    customer: str
    subscription: str | None
    subscription_item: str | None
    price: str
    status: str  # draft, open, paid, void, uncollectible
    amount_due: int
    currency: str
    created: int
    billing_reason: str
    period_start: int
    period_end: int
    line_id: str
    line_start: int
    line_end: int
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
