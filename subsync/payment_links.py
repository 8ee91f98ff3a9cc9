"""Whose payment a charge was, from Stripe's API and our invoices: what a refund's or dispute's row names.

* customer: the charge's `customer`;
* invoice: before basil, the charge's `invoice`; from basil on a charge does
  not say, its payment intent's InvoicePayment does (`GET
  /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=`):
  a payment intent of no invoice (a checkout's, a one-off payment) has none;
* subscription: the invoice's, from our `invoices` table when we hold the
  invoice, else from Stripe's invoice.

A refund or a dispute names only its charge (`GET /v1/charges/{id}`). Each
charge is looked up once per finder. No connection is held while Stripe
answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg_pool import ConnectionPool

from subsync.reversals import PaymentLinks
from subsync.store import invoices
from subsync.stripe_api import StripeApi
from subsync.stripe_objects import MalformedObject, invoice_subscription_id, parse_charge


class LinkFinder:
    """Looks up whose payment each charge was, on one account, remembering every charge it looked up."""

    def __init__(self, api: StripeApi, pool: ConnectionPool[Any] | None, *, account: str | None) -> None:
        self.api = api
        self.pool = pool
        self.account = account
        self._by_charge: dict[str, PaymentLinks] = {}

    def of_charge_id(self, charge_id: str | None) -> PaymentLinks:
        """The links of the charge `charge_id`, fetched; none for no charge."""
        if charge_id is None:
            return PaymentLinks()
        if charge_id not in self._by_charge:
            _check_id(charge_id)
            charge, _ = self.api.get(f"/v1/charges/{charge_id}", account=self.account)
            self.of_charge(charge)
        return self._by_charge[charge_id]

    def of_charge(self, obj: Mapping[str, Any]) -> PaymentLinks:
        """The links of a charge Stripe showed (an event's, an answer's)."""
        charge = parse_charge(obj)
        if charge.id in self._by_charge:
            return self._by_charge[charge.id]
        invoice_id = charge.invoice_id
        if not charge.invoice_named and charge.payment_intent_id is not None:
            invoice_id = self._invoice_of_intent(charge.payment_intent_id)
        links = PaymentLinks(charge.customer_id, invoice_id, self._subscription_of(invoice_id))
        self._by_charge[charge.id] = links
        return links

    def _invoice_of_intent(self, payment_intent_id: str) -> str | None:
        page, _ = self.api.get(
            "/v1/invoice_payments",
            account=self.account,
            payment={"type": "payment_intent", "payment_intent": payment_intent_id},
        )
        listed = [p for p in page.get("data") or [] if isinstance(p, Mapping)]
        # A payment intent pays one invoice; a canceled InvoicePayment is an attempt that did not.
        listed.sort(key=lambda p: p.get("status") != "paid")
        for payment in listed:
            invoice = payment.get("invoice")
            invoice_id = invoice.get("id") if isinstance(invoice, Mapping) else invoice
            if isinstance(invoice_id, str) and invoice_id:
                return invoice_id
        return None

    def _subscription_of(self, invoice_id: str | None) -> str | None:
        if invoice_id is None:
            return None
        if self.pool is not None:
            with self.pool.connection() as conn:
                held = invoices.subscriptions_of(conn, [invoice_id])
            if invoice_id in held:
                return held[invoice_id]
        _check_id(invoice_id)
        invoice, _ = self.api.get(f"/v1/invoices/{invoice_id}", account=self.account)
        return invoice_subscription_id(invoice)


def _check_id(ident: str) -> None:
    """An id from a payload goes into a URL path: nothing but an id may."""
    if not ident or "/" in ident or "?" in ident or "." in ident:
        raise MalformedObject("an object id that cannot be part of a URL")
