"""Invoice items: amounts a customer owes that the next invoice bills as lines of their own."""

from __future__ import annotations

from dataclasses import dataclass, field

from .tables import Table


@dataclass(slots=True)
class InvoiceItem:
    id: str
    customer: str
    amount: int
    currency: str
    created: int
    description: str | None
    subscription: str | None  # only that subscription's next invoice takes it; None: the customer's next one
    quantity: int = 1
    invoice: str | None = None  # None while pending
    line: str | None = None  # its line on that invoice
    deleted: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def unit_amount(self) -> int:
        return self.amount // self.quantity if self.quantity else self.amount


@dataclass(eq=False)
class InvoiceItemsBook:
    items: Table[InvoiceItem] = field(default_factory=Table)
    pending: dict[str, list[str]] = field(default_factory=dict)  # customer -> pending item ids, oldest first
