"""Records of money movements: payment intents, charges, refunds, disputes, invoice payments.

One :class:`PaymentsBook` per account (it lives in that account's ledger).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .tables import Table


@dataclass(slots=True)
class PaymentIntent:
    id: str
    amount: int
    currency: str
    customer: str | None
    created: int
    status: str  # requires_payment_method, processing, succeeded, canceled
    invoice: str | None = None
    description: str | None = None
    latest_charge: str | None = None
    payment_method: str | None = None
    amount_received: int = 0
    last_error: dict[str, Any] | None = None
    canceled_at: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Charge:
    id: str
    amount: int
    currency: str
    customer: str | None
    created: int
    status: str  # succeeded, pending, failed
    payment_intent: str | None
    invoice: str | None
    payment_method: str
    balance_transaction: str | None
    description: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    refunds: list[str] = field(default_factory=list)  # oldest first
    dispute: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Refund:
    id: str
    charge: str
    payment_intent: str | None
    amount: int
    currency: str
    created: int
    status: str  # pending, succeeded, failed, canceled
    reason: str | None
    balance_transaction: str
    failure_reason: str | None = None
    failure_balance_transaction: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> bool:
        """Whether it takes from the charge: pending and succeeded refunds do, failed and canceled ones gave back."""
        return self.status in ("pending", "succeeded")


@dataclass(slots=True)
class BalanceMove:
    """One balance transaction of a dispute (shown whole inside the dispute)."""

    id: str
    amount: int
    fee: int
    currency: str
    created: int
    description: str
    reporting_category: str  # dispute, dispute_reversal


@dataclass(slots=True)
class Dispute:
    id: str
    charge: str
    payment_intent: str | None
    amount: int
    currency: str
    created: int
    reason: str
    status: str  # warning_needs_response, needs_response, under_review, won, lost, warning_closed
    due_by: int
    inquiry: bool = False
    moves: list[BalanceMove] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)
    submission_count: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class InvoicePayment:
    """The default payment Stripe makes for a finalized invoice (basil+ shapes show it)."""

    id: str
    invoice: str
    payment_intent: str
    amount_requested: int
    currency: str
    created: int
    amount_paid: int | None = None
    paid_at: int | None = None


@dataclass(eq=False)
class PaymentsBook:
    """One account's money records, each kind in creation order."""

    intents: Table[PaymentIntent] = field(default_factory=Table)
    charges: Table[Charge] = field(default_factory=Table)
    refunds: Table[Refund] = field(default_factory=Table)
    disputes: Table[Dispute] = field(default_factory=Table)
    invoice_payments: Table[InvoicePayment] = field(default_factory=Table)
    payment_of_invoice: dict[str, str] = field(default_factory=dict)  # invoice -> its default invoice payment
    cards: dict[str, str] = field(default_factory=dict)  # customer -> the card its charges show when it has none
