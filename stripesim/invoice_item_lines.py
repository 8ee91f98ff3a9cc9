"""The line an invoice shows for a pending invoice item it took in (``shapes.Renderer.invoice_line``)."""

from __future__ import annotations

from typing import Any

from .model import Invoice, InvoiceLine


def invoice_item_line(inv: Invoice, ln: InvoiceLine, *, basil: bool, livemode: bool) -> dict[str, Any]:
    """An invoice item's line: its amount and description, no price (the item was made with an amount)."""
    line: dict[str, Any] = {
        "id": ln.id,
        "object": "line_item",
        "amount": ln.amount,
        "currency": inv.currency,
        "description": ln.description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "livemode": livemode,
        "metadata": {},
        "period": {"end": ln.period_end, "start": ln.period_start},
        "quantity": ln.quantity,
    }
    if basil:
        line["invoice"] = inv.id
        line["parent"] = {
            "invoice_item_details": {
                "invoice_item": ln.invoice_item,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": ln.item_subscription,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
        line["pretax_credit_amounts"] = []
        line["pricing"] = None
        line["taxes"] = []
    else:
        line["amount_excluding_tax"] = ln.amount
        line["invoice_item"] = ln.invoice_item
        line["plan"] = None
        line["price"] = None
        line["proration"] = False
        line["proration_details"] = {"credited_items": None}
        line["subscription"] = ln.item_subscription
        line["subscription_item"] = None
        line["tax_amounts"] = []
        line["tax_rates"] = []
        line["type"] = "invoiceitem"
        line["unit_amount_excluding_tax"] = str(ln.unit_amount)
    return line
