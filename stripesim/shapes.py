"""Render the simulator's records as Stripe JSON for one API version.

Two shapes are supported:

* ``2025-03-31.basil`` and later: the subscription has no top-level
  ``current_period_start/end`` (they are on ``items.data[]``); an invoice links
  its subscription at ``parent.subscription_details.subscription``; invoice
  lines carry ``parent.subscription_item_details``, ``pricing`` and ``period``.
* anything older (e.g. ``2024-06-20``): periods on the subscription, none on
  items; ``invoice.subscription``, ``invoice.paid``, ``invoice.charge``; lines
  carry ``price``/``plan``/``subscription``.

A subscription has one or more items, an invoice one line per item it bills.
``livemode`` is the instance's mode on every object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .invoice_item_lines import invoice_item_line
from .model import CheckoutSession, Customer, Invoice, InvoiceLine, Price, Product, SubItem, Subscription

BASIL = "2025-03-31.basil"
LEGACY = "2024-06-20"

JSON = dict[str, Any]


def is_basil(api_version: str) -> bool:
    """True for ``2025-03-31.basil`` and every later version."""
    return api_version[:10] >= "2025-03-31"


def _money(amount: int, currency: str) -> str:
    symbol = "$" if currency == "usd" else ""
    return f"{symbol}{amount // 100}.{amount % 100:02d}"


class Renderer:
    """Turns records into fresh JSON-ready dicts (never shared with the records)."""

    def __init__(
        self,
        api_version: str,
        prices: Callable[[str], Price],
        products: Callable[[str], Product],
        customers: Callable[[str], Customer | None],
        *,
        livemode: bool = False,
        account_name: Callable[[], str] | None = None,
    ) -> None:
        self.api_version = api_version
        self.basil = is_basil(api_version)
        self.livemode = livemode
        self._price = prices
        self._product = products
        self._customer = customers
        self._account_name = account_name or (lambda: "subsync simulator")

    # -- catalogue ---------------------------------------------------------
    def price(self, price: Price) -> JSON:
        return {
            "id": price.id,
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": price.created,
            "currency": price.currency,
            "custom_unit_amount": None,
            "livemode": self.livemode,
            "lookup_key": price.lookup_key,
            "metadata": {},
            "nickname": price.nickname,
            "product": price.product,
            "recurring": {
                "interval": price.interval,
                "interval_count": price.interval_count,
                "meter": None,
                "trial_period_days": None,
                "usage_type": "licensed",
            },
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring",
            "unit_amount": price.unit_amount,
            "unit_amount_decimal": str(price.unit_amount),
        }

    def plan(self, price: Price) -> JSON:
        return {
            "id": price.id,
            "object": "plan",
            "active": True,
            "amount": price.unit_amount,
            "amount_decimal": str(price.unit_amount),
            "billing_scheme": "per_unit",
            "created": price.created,
            "currency": price.currency,
            "interval": price.interval,
            "interval_count": price.interval_count,
            "livemode": self.livemode,
            "metadata": {},
            "meter": None,
            "nickname": price.nickname,
            "product": price.product,
            "tiers_mode": None,
            "transform_usage": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }

    def product(self, product: Product) -> JSON:
        return {
            "id": product.id,
            "object": "product",
            "active": True,
            "created": product.created,
            "default_price": None,
            "description": None,
            "images": [],
            "livemode": self.livemode,
            "metadata": {},
            "name": product.name,
            "type": "service",
            "updated": product.created,
            "url": None,
        }

    # -- customer ----------------------------------------------------------
    def customer(self, cus: Customer) -> JSON:
        if cus.deleted:
            return {"id": cus.id, "object": "customer", "deleted": True}
        return {
            "id": cus.id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": cus.created,
            "currency": "usd",
            "default_source": None,
            "delinquent": False,
            "description": cus.description,
            "discount": None,
            "email": cus.email,
            "invoice_prefix": cus.invoice_prefix,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": cus.default_payment_method,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": self.livemode,
            "metadata": dict(cus.metadata),
            "name": cus.name,
            "next_invoice_sequence": cus.next_invoice_sequence,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }

    # -- subscription --------------------------------------------------------
    def subscription_item(self, sub: Subscription, it: SubItem) -> JSON:
        price = self._price(it.price)
        item: JSON = {
            "id": it.id,
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": it.created,
            "discounts": [],
            "metadata": dict(it.metadata),
            "plan": self.plan(price),
            "price": self.price(price),
            "quantity": it.quantity,
            "subscription": sub.id,
            "tax_rates": [],
        }
        if self.basil:
            item["current_period_end"] = it.current_period_end
            item["current_period_start"] = it.current_period_start
        return item

    @staticmethod
    def billing_mode(sub: Subscription) -> JSON:
        if sub.billing_mode == "flexible":
            return {"flexible": {"proration_discounts": "included"}, "type": "flexible", "updated_at": sub.created}
        return {"type": "classic"}

    def subscription(self, sub: Subscription) -> JSON:
        price = self._price(sub.price)
        out: JSON = {
            "id": sub.id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": sub.billing_cycle_anchor,
            "billing_cycle_anchor_config": None,
            "billing_thresholds": None,
            "cancel_at": sub.cancel_at,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "canceled_at": sub.canceled_at,
            "cancellation_details": {
                "comment": sub.cancellation_comment,
                "feedback": sub.cancellation_feedback,
                "reason": sub.cancellation_reason,
            },
            "collection_method": "charge_automatically",
            "created": sub.created,
            "currency": price.currency,
            "customer": sub.customer,
            "days_until_due": None,
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [],
            "ended_at": sub.ended_at,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": [self.subscription_item(sub, it) for it in sub.items],
                "has_more": False,
                "total_count": len(sub.items),
                "url": f"/v1/subscription_items?subscription={sub.id}",
            },
            "latest_invoice": sub.latest_invoice,
            "livemode": self.livemode,
            "metadata": dict(sub.metadata),
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": sub.start_date,
            "status": sub.status,
            "test_clock": None,
            "transfer_data": None,
            "trial_end": sub.trial_end,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": sub.trial_start,
        }
        if self.basil:
            out["billing_mode"] = self.billing_mode(sub)
        else:
            single = len(sub.items) == 1  # plan and quantity are only set for one item
            out["current_period_end"] = sub.current_period_end
            out["current_period_start"] = sub.current_period_start
            out["discount"] = None
            out["plan"] = self.plan(price) if single else None
            out["quantity"] = sub.items[0].quantity if single else None
        return out

    # -- invoice -------------------------------------------------------------
    def invoice_line(self, inv: Invoice, ln: InvoiceLine) -> JSON:
        if ln.invoice_item is not None:
            return invoice_item_line(inv, ln, basil=self.basil, livemode=self.livemode)
        price = self._price(ln.price)
        product = self._product(price.product)
        per = price.interval if price.interval_count == 1 else f"{price.interval_count} {price.interval}s"
        if inv.billing_reason == "subscription_create" and ln.amount == 0:
            description = f"Trial period for {product.name}"
        else:
            money = _money(price.unit_amount, price.currency)
            description = f"{ln.quantity} \u00d7 {product.name} (at {money} / {per})"
        line: JSON = {
            "id": ln.id,
            "object": "line_item",
            "amount": ln.amount,
            "currency": inv.currency,
            "description": description,
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "livemode": self.livemode,
            "metadata": {},
            "period": {"end": ln.period_end, "start": ln.period_start},
            "quantity": ln.quantity,
        }
        if self.basil:
            line["invoice"] = inv.id
            line["parent"] = {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": inv.subscription,
                    "subscription_item": ln.subscription_item,
                },
                "type": "subscription_item_details",
            }
            line["pretax_credit_amounts"] = []
            line["pricing"] = {
                "price_details": {"price": price.id, "product": price.product},
                "type": "price_details",
                "unit_amount_decimal": str(ln.unit_amount),
            }
            line["taxes"] = []
        else:
            line["amount_excluding_tax"] = ln.amount
            line["invoice_item"] = None
            line["plan"] = self.plan(price)
            line["price"] = self.price(price)
            line["proration"] = False
            line["proration_details"] = {"credited_items": None}
            line["subscription"] = inv.subscription
            line["subscription_item"] = ln.subscription_item
            line["tax_amounts"] = []
            line["tax_rates"] = []
            line["type"] = "subscription"
            line["unit_amount_excluding_tax"] = str(ln.unit_amount)
        return line

    def invoice(self, inv: Invoice) -> JSON:
        cus = self._customer(inv.customer)
        draft = inv.status == "draft"
        out: JSON = {
            "id": inv.id,
            "object": "invoice",
            "account_country": "US",
            "account_name": self._account_name(),
            "account_tax_ids": None,
            "amount_due": inv.amount_due,
            "amount_overpaid": 0,
            "amount_paid": inv.amount_paid,
            "amount_remaining": inv.amount_remaining,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": inv.attempt_count,
            "attempted": inv.attempted,
            "auto_advance": inv.auto_advance,
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "billing_reason": inv.billing_reason,
            "collection_method": "charge_automatically",
            "created": inv.created,
            "currency": inv.currency,
            "custom_fields": None,
            "customer": inv.customer,
            "customer_address": None,
            "customer_email": cus.email if cus and not cus.deleted else None,
            "customer_name": cus.name if cus and not cus.deleted else None,
            "customer_phone": None,
            "customer_shipping": None,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [],
            "due_date": None,
            "effective_at": inv.finalized_at,
            "ending_balance": None if draft else 0,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None if draft else f"https://invoice.stripe.com/i/sim/{inv.id}",
            "invoice_pdf": None if draft else f"https://pay.stripe.com/invoice/sim/{inv.id}/pdf",
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": {
                "object": "list",
                "data": [self.invoice_line(inv, ln) for ln in inv.lines],
                "has_more": False,
                "total_count": len(inv.lines),
                "url": f"/v1/invoices/{inv.id}/lines",
            },
            "livemode": self.livemode,
            "metadata": dict(inv.metadata),
            "next_payment_attempt": inv.next_payment_attempt,
            "number": inv.number,
            "on_behalf_of": None,
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "period_end": inv.period_end,
            "period_start": inv.period_start,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": inv.status,
            "status_transitions": {
                "finalized_at": inv.finalized_at,
                "marked_uncollectible_at": inv.marked_uncollectible_at,
                "paid_at": inv.paid_at,
                "voided_at": inv.voided_at,
            },
            "subtotal": inv.amount_due,
            "subtotal_excluding_tax": inv.amount_due,
            "test_clock": None,
            "total": inv.amount_due,
            "total_discount_amounts": [],
            "total_excluding_tax": inv.amount_due,
            "webhooks_delivered_at": inv.created,
        }
        if self.basil:
            out["automatically_finalizes_at"] = inv.created + 3600 if draft else None
            out["parent"] = (
                {
                    "quote_details": None,
                    "subscription_details": {
                        "metadata": dict(inv.sub_metadata),
                        "subscription": inv.subscription,
                    },
                    "type": "subscription_details",
                }
                if inv.subscription
                else None
            )
            out["total_pretax_credit_amounts"] = []
            out["total_taxes"] = []
        else:
            out["application_fee_amount"] = None
            out["charge"] = inv.charge
            out["discount"] = None
            out["paid"] = inv.status == "paid"
            out["paid_out_of_band"] = False
            out["payment_intent"] = inv.payment_intent
            out["quote"] = None
            out["subscription"] = inv.subscription
            out["subscription_details"] = {"metadata": dict(inv.sub_metadata)}
            out["tax"] = None
            out["total_tax_amounts"] = []
            out["transfer_data"] = None
        return out

    # -- checkout ------------------------------------------------------------
    def checkout_session(self, cs: CheckoutSession) -> JSON:
        cus = self._customer(cs.customer) if cs.customer else None
        email = cs.customer_email or (cus.email if cus and not cus.deleted else None)
        return {
            "id": cs.id,
            "object": "checkout.session",
            "adaptive_pricing": None,
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": cs.amount_total,
            "amount_total": cs.amount_total,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_address_collection": None,
            "cancel_url": cs.cancel_url,
            "client_reference_id": cs.client_reference_id,
            "client_secret": None,
            "consent": None,
            "consent_collection": None,
            "created": cs.created,
            "currency": cs.currency,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": cs.customer,
            "customer_creation": "if_required" if cs.mode == "payment" else "always",
            "customer_details": (
                None
                if cs.status == "open"
                else {
                    "address": None,
                    "email": email,
                    "name": cus.name if cus and not cus.deleted else None,
                    "phone": None,
                    "tax_exempt": "none",
                    "tax_ids": [],
                }
            ),
            "customer_email": cs.customer_email,
            "expires_at": cs.expires_at,
            "invoice": cs.invoice,
            "invoice_creation": None,
            "livemode": self.livemode,
            "locale": None,
            "metadata": dict(cs.metadata),
            "mode": cs.mode,
            "payment_intent": cs.payment_intent,
            "payment_link": None,
            "payment_method_collection": "if_required" if cs.mode == "subscription" else None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "payment_status": cs.payment_status,
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": cs.status,
            "submit_type": None,
            "subscription": cs.subscription,
            "success_url": cs.success_url,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": None if cs.status != "open" else f"https://checkout.stripe.com/c/pay/{cs.id}",
        }
