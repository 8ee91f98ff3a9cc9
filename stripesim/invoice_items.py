"""Invoice items: one-off amounts a customer owes, billed by its next invoice (``invoiceitem.created``).

A pending item (``invoice: null``) is taken in by the next invoice made for
the customer's subscriptions (its first invoice, a renewal, a resume), or
only by that subscription's when it was made for one (``subscription``),
and in that invoice's currency only. The invoice shows it as a line of its
own (basil+: ``parent.type = invoice_item_details``) and charges it with the
rest. Deleting a pending item: ``invoiceitem.deleted``.
"""

from __future__ import annotations

from .core import SimCore, operation
from .invoice_items_model import InvoiceItem, InvoiceItemsBook
from .model import InvoiceLine, SimError, Subscription, missing
from .shapes import JSON
from .tables import list_page


class InvoiceItemsMixin(SimCore):
    """``create_invoice_item``, ``delete_invoice_item``, reading them, and invoices taking them in."""

    @property
    def _items_book(self) -> InvoiceItemsBook:
        return self._ledger.invoice_items

    def _pending_item_lines(self, sub: Subscription, invoice: str, currency: str) -> list[InvoiceLine]:
        """The customer's pending items this subscription's new invoice takes in, as its lines."""
        book = self._items_book
        pending = book.pending.get(sub.customer)
        if not pending:
            return []
        lines: list[InvoiceLine] = []
        left: list[str] = []
        for ident in pending:
            ii = book.items.rows[ident]
            if ii.subscription not in (None, sub.id) or ii.currency != currency:
                left.append(ident)
                continue
            ii.invoice = invoice
            ii.line = self.ids.new("il")
            lines.append(
                InvoiceLine(
                    id=ii.line,
                    subscription_item=None,
                    price="",
                    quantity=ii.quantity,
                    unit_amount=ii.unit_amount,
                    period_start=ii.created,
                    period_end=ii.created,
                    invoice_item=ii.id,
                    description=ii.description,
                    item_subscription=ii.subscription,
                )
            )
        book.pending[sub.customer] = left
        return lines

    def _invoice_item_json(self, ii: InvoiceItem) -> JSON:
        if ii.deleted:
            return {"id": ii.id, "object": "invoiceitem", "deleted": True}
        out: JSON = {
            "id": ii.id,
            "object": "invoiceitem",
            "amount": ii.amount,
            "currency": ii.currency,
            "customer": ii.customer,
            "date": ii.created,
            "description": ii.description,
            "discountable": True,
            "discounts": [],
            "invoice": ii.invoice,
            "livemode": self.livemode,
            "metadata": dict(ii.metadata),
            "period": {"end": ii.created, "start": ii.created},
            "proration": False,
            "quantity": ii.quantity,
            "tax_rates": [],
            "test_clock": None,
        }
        if self.render.basil:
            out["net_amount"] = ii.amount
            out["parent"] = (
                {"subscription_details": {"subscription": ii.subscription}, "type": "subscription_details"}
                if ii.subscription
                else None
            )
            out["pricing"] = None
        else:
            out["plan"] = None
            out["price"] = None
            out["subscription"] = ii.subscription
            out["subscription_item"] = None
            out["unit_amount"] = ii.unit_amount
            out["unit_amount_decimal"] = str(ii.unit_amount)
        return out

    @operation
    def create_invoice_item(
        self,
        customer: str,
        amount: int,
        currency: str = "usd",
        description: str | None = None,
        subscription: str | None = None,
        *,
        quantity: int = 1,
        metadata: dict[str, str] | None = None,
        account: str | None = None,
    ) -> JSON:
        """A pending invoice item (``ii_…``) of ``amount`` (in all, ``quantity`` units of ``amount / quantity``)."""
        self._use(account)
        cus = self._live_customer(customer)
        amount = int(amount)
        quantity = int(quantity)
        if quantity < 1:
            raise SimError("Quantity must be a positive integer", param="quantity")
        if amount % quantity:
            raise SimError("amount must be a whole number of units of quantity", param="amount")
        if subscription is not None:
            sub = self._sub(subscription)
            if sub.customer != cus.id:
                raise SimError(f"The subscription {sub.id} does not belong to customer {cus.id}.", param="subscription")
            if sub.status in ("canceled", "incomplete_expired"):
                raise SimError(
                    f"Subscription {sub.id} is {sub.status}; it takes no more invoice items.", param="subscription"
                )
        ii = InvoiceItem(
            id=self.ids.new("ii"),
            customer=cus.id,
            amount=amount,
            currency=currency.lower(),
            created=self.clock.now(),
            description=description,
            subscription=subscription,
            quantity=quantity,
            metadata=dict(metadata or {}),
        )
        book = self._items_book
        book.items.add(ii)
        book.pending.setdefault(cus.id, []).append(ii.id)
        out = self._invoice_item_json(ii)
        self._emit("invoiceitem.created", out)
        return self._invoice_item_json(ii)

    def _item(self, ident: str) -> InvoiceItem:
        ii = self._items_book.items.get(ident)
        if ii is None or ii.deleted:
            raise missing("invoiceitem", ident, "id")
        return ii

    @operation
    def delete_invoice_item(self, invoice_item: str, *, account: str | None = None) -> JSON:
        """Delete a pending item: ``invoiceitem.deleted``; one an invoice took in stays."""
        self._use(account)
        ii = self._item(invoice_item)
        if ii.invoice is not None:
            raise SimError(
                f"Invoice item {ii.id} is on invoice {ii.invoice}, which is no longer editable.",
                param="invoiceitem",
            )
        snapshot = self._invoice_item_json(ii)
        ii.deleted = True
        pending = self._items_book.pending.get(ii.customer, [])
        if ii.id in pending:
            pending.remove(ii.id)
        self._emit("invoiceitem.deleted", snapshot)
        return self._invoice_item_json(ii)

    def get_invoice_item(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            return self._invoice_item_json(self._item(ident))

    def list_invoice_items(
        self,
        *,
        customer: str | None = None,
        invoice: str | None = None,
        pending: bool | None = None,
        created: dict[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """``GET /v1/invoiceitems``: ``customer``, ``invoice``, ``pending`` (only those on no invoice yet)."""
        with self._acting(account):

            def match(ii: InvoiceItem) -> bool:
                if ii.deleted or (customer is not None and ii.customer != customer):
                    return False
                if invoice is not None and ii.invoice != invoice:
                    return False
                return pending is None or (ii.invoice is None) == pending

            return list_page(
                self._items_book.items,
                kind="invoiceitem",
                url="/v1/invoiceitems",
                render=self._invoice_item_json,
                match=match,
                created=created,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )
