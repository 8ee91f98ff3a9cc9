"""Payments behind invoices and checkout sessions: payment intents, charges, invoice payments.

A finalized invoice with something to pay gets a payment intent
(``payment_intent.created``) and, in basil+ shapes, its default invoice
payment. Each payment attempt is a charge on that intent: ``charge.succeeded``
+ ``payment_intent.succeeded`` (+ ``invoice_payment.paid`` from
2025-05-28.basil), or ``charge.failed`` + ``payment_intent.payment_failed``,
emitted just before the invoice's own events. A checkout session in payment
mode is paid by an intent of its own (``charge.pending`` and
``payment_intent.processing`` while a delayed payment is unresolved).
Silent populations (``bulk_create``) keep the invoice's ids only.

The records always exist; their own events are emitted while
``payment_events`` is on, as it is by default (Stripe sends them); a test
that wants an invoice's own event stream alone turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from .core import SimCore
from .model import CheckoutSession, Invoice, SimError, missing
from .payments_model import Charge, InvoicePayment, PaymentIntent, PaymentsBook
from .payments_shapes import DECLINE, PaymentsRenderer
from .shapes import JSON
from .tables import list_page

DESCRIPTIONS = {"subscription_create": "Subscription creation", "subscription_cycle": "Subscription update"}


class ChargesMixin(SimCore):
    """The payment records of invoices and sessions, and reading them."""

    @cached_property
    def money_render(self) -> PaymentsRenderer:
        return PaymentsRenderer(self.api_version, self.livemode)

    @property
    def _pay(self) -> PaymentsBook:
        return self._ledger.payments

    def _payment_event(self, type_: str, render: Callable[[], JSON]) -> None:
        """An event of a payment's own lifecycle: emitted only when the instance has ``payment_events`` on."""
        if self.payment_events:
            self._emit(type_, render())

    # ---------------------------------------------------------------- invoices
    def _open_payment(self, inv: Invoice) -> None:
        """At finalization: the invoice's payment intent and its default invoice payment."""
        if inv.amount_due <= 0 or self._quiet or inv.payment_intent is not None:
            return
        pi = self._new_intent(inv.amount_due, inv.currency, inv.customer, invoice=inv.id)
        pi.description = DESCRIPTIONS.get(inv.billing_reason, "Payment for Invoice")
        inv.payment_intent = pi.id
        if self.money_render.basil:
            ip = InvoicePayment(self.ids.new("inpay"), inv.id, pi.id, inv.amount_due, inv.currency, self.clock.now())
            self._pay.invoice_payments.add(ip)
            self._pay.payment_of_invoice[inv.id] = ip.id
        self._payment_event("payment_intent.created", lambda: self._intent_json(pi))

    def _settle_payment(self, inv: Invoice, succeeded: bool) -> None:
        """One attempt to pay ``inv``: a charge on its intent and their events (the invoice's come after)."""
        if self._quiet:
            if succeeded:  # ids only, as before money was modelled
                inv.payment_intent = self.ids.new("pi")
                inv.charge = self.ids.new("ch")
            return
        pi = self._pay.intents.get(inv.payment_intent)
        if pi is None:  # finalized silently, paid loudly
            inv.payment_intent = None
            self._open_payment(inv)
            pi = self._pay.intents.rows[inv.payment_intent or ""]
        ch = self._new_charge(pi, "succeeded" if succeeded else "failed")
        inv.charge = ch.id
        if succeeded:
            self._intent_succeeded(pi)
            ip = self._pay.invoice_payments.get(self._pay.payment_of_invoice.get(inv.id))
            self._payment_event("charge.succeeded", lambda: self._charge_json(ch))
            self._payment_event("payment_intent.succeeded", lambda: self._intent_json(pi))
            if ip is not None:
                ip.amount_paid = ip.amount_requested
                ip.paid_at = self.clock.now()
                if self.money_render.invoice_payment_paid_event:
                    self._payment_event("invoice_payment.paid", lambda: self._invoice_payment_json(ip))
        else:
            self._intent_failed(pi, ch)
            self._payment_event("charge.failed", lambda: self._charge_json(ch))
            self._payment_event("payment_intent.payment_failed", lambda: self._intent_json(pi))

    # ---------------------------------------------------------------- sessions
    def _checkout_payment(self, cs: CheckoutSession, async_payment: bool) -> None:
        """A payment-mode session completes: its intent and charge (pending while the payment is delayed)."""
        pi = self._new_intent(cs.amount_total, cs.currency, cs.customer, invoice=None)
        cs.payment_intent = pi.id
        self._payment_event("payment_intent.created", lambda: self._intent_json(pi))
        if cs.amount_total <= 0:
            return
        if async_payment:
            ch = self._new_charge(pi, "pending")
            pi.status = "processing"
            self._payment_event("charge.pending", lambda: self._charge_json(ch))
            self._payment_event("payment_intent.processing", lambda: self._intent_json(pi))
            return
        ch = self._new_charge(pi, "succeeded")
        self._intent_succeeded(pi)
        self._payment_event("charge.succeeded", lambda: self._charge_json(ch))
        self._payment_event("payment_intent.succeeded", lambda: self._intent_json(pi))

    def _checkout_payment_settled(self, cs: CheckoutSession, succeeded: bool) -> None:
        pi = self._pay.intents.get(cs.payment_intent)
        ch = self._pay.charges.get(pi.latest_charge if pi is not None else None)
        if pi is None or ch is None or ch.status != "pending":
            return
        if succeeded:
            ch.status = "succeeded"
            ch.balance_transaction = self.ids.new("txn")
            self._intent_succeeded(pi)
            self._payment_event("charge.succeeded", lambda: self._charge_json(ch))
            self._payment_event("payment_intent.succeeded", lambda: self._intent_json(pi))
        else:
            ch.status = "failed"
            ch.failure_code, ch.failure_message = DECLINE["code"], DECLINE["message"]
            self._intent_failed(pi, ch)
            self._payment_event("charge.failed", lambda: self._charge_json(ch))
            self._payment_event("payment_intent.payment_failed", lambda: self._intent_json(pi))

    # ------------------------------------------------------------------ records
    def _new_intent(self, amount: int, currency: str, customer: str | None, *, invoice: str | None) -> PaymentIntent:
        pi = PaymentIntent(
            self.ids.new("pi"), amount, currency, customer, self.clock.now(), "requires_payment_method", invoice
        )
        return self._pay.intents.add(pi)

    def _new_charge(self, pi: PaymentIntent, status: str) -> Charge:
        ch = Charge(
            id=self.ids.new("ch"),
            amount=pi.amount,
            currency=pi.currency,
            customer=pi.customer,
            created=self.clock.now(),
            status=status,
            payment_intent=pi.id,
            invoice=pi.invoice,
            payment_method=self._card_of(pi.customer),
            balance_transaction=self.ids.new("txn") if status == "succeeded" else None,
            description=pi.description,
        )
        if status == "failed":
            ch.failure_code, ch.failure_message = DECLINE["code"], DECLINE["message"]
        pi.latest_charge = ch.id
        pi.payment_method = ch.payment_method
        return self._pay.charges.add(ch)

    def _charge_for(self, target: str) -> Charge:
        """A charge by id, or the latest successful charge of an invoice or payment intent."""
        book = self._pay
        if target.startswith("in_"):
            inv = self._inv(target, "charge")
            pi = book.intents.get(inv.payment_intent)
            target = (pi.latest_charge if pi is not None else None) or inv.charge or ""
            if not target:
                raise SimError(f"Invoice {inv.id} has no charge to refund.", param="charge")
        elif target.startswith("pi_"):
            pi = book.intents.get(target)
            if pi is None:
                raise missing("payment_intent", target, "payment_intent")
            if pi.latest_charge is None:
                raise SimError(f"PaymentIntent {pi.id} has no charge to refund.", param="payment_intent")
            target = pi.latest_charge
        ch = book.charges.get(target)
        if ch is None:
            raise missing("charge", target, "charge")
        return ch

    def _card_of(self, customer: str | None) -> str:
        """The card a charge shows: the customer's default one, else one made for it once."""
        cus = self.customers.get(customer or "")
        if cus is not None and cus.default_payment_method:
            return cus.default_payment_method
        key = customer or ""
        if key not in self._pay.cards:
            self._pay.cards[key] = self.ids.new("pm")
        return self._pay.cards[key]

    @staticmethod
    def _intent_succeeded(pi: PaymentIntent) -> None:
        pi.status = "succeeded"
        pi.amount_received = pi.amount
        pi.last_error = None

    def _intent_failed(self, pi: PaymentIntent, ch: Charge) -> None:
        pi.status = "requires_payment_method"
        pi.last_error = {
            "charge": ch.id,
            "code": DECLINE["code"],
            "decline_code": DECLINE["decline_code"],
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": DECLINE["message"],
            "payment_method": {"id": ch.payment_method, "object": "payment_method", "type": "card"},
            "type": "card_error",
        }

    # ---------------------------------------------------------------- rendering
    def _intent_json(self, pi: PaymentIntent) -> JSON:
        inv = self.invoices.get(pi.invoice or "")
        if inv is not None and inv.status == "void" and pi.status != "succeeded":
            return self.money_render.intent(pi, "canceled", inv.voided_at)
        return self.money_render.intent(pi, pi.status, None)

    def _charge_json(self, ch: Charge, *, with_refunds: bool = False) -> JSON:
        refunds = [self._pay.refunds.rows[r] for r in ch.refunds]
        return self.money_render.charge(ch, refunds, with_refunds=with_refunds)

    def _invoice_payment_json(self, ip: InvoicePayment) -> JSON:
        inv = self.invoices.get(ip.invoice)
        if ip.paid_at is not None:
            return self.money_render.invoice_payment(ip, "paid", None)
        if inv is not None and inv.status == "void":
            return self.money_render.invoice_payment(ip, "canceled", inv.voided_at)
        return self.money_render.invoice_payment(ip, "open", None)

    # ------------------------------------------------------------------ reading
    def get_charge(self, ident: str, *, expand_refunds: bool = False, account: str | None = None) -> JSON:
        """``GET /v1/charges/{id}``; ``expand_refunds``: with its ``refunds`` list (``expand[]=refunds``)."""
        with self._acting(account):
            ch = self._pay.charges.get(ident)
            if ch is None:
                raise missing("charge", ident, "id")
            return self._charge_json(ch, with_refunds=expand_refunds)

    def list_charges(
        self,
        *,
        customer: str | None = None,
        payment_intent: str | None = None,
        created: dict[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        with self._acting(account):
            return list_page(
                self._pay.charges,
                kind="charge",
                url="/v1/charges",
                render=self._charge_json,
                match=lambda ch: (
                    (customer is None or ch.customer == customer)
                    and (payment_intent is None or ch.payment_intent == payment_intent)
                ),
                created=created,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )

    def get_payment_intent(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            pi = self._pay.intents.get(ident)
            if pi is None:
                raise missing("payment_intent", ident, "intent")
            return self._intent_json(pi)

    def list_payment_intents(
        self,
        *,
        customer: str | None = None,
        created: dict[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        with self._acting(account):
            return list_page(
                self._pay.intents,
                kind="payment_intent",
                url="/v1/payment_intents",
                render=self._intent_json,
                match=lambda pi: customer is None or pi.customer == customer,
                created=created,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )

    def get_invoice_payment(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            ip = self._pay.invoice_payments.get(ident)
            if ip is None:
                raise missing("invoice_payment", ident, "invoice_payment")
            return self._invoice_payment_json(ip)

    def list_invoice_payments(
        self,
        *,
        invoice: str | None = None,
        payment_intent: str | None = None,
        status: str | None = None,
        created: dict[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """``GET /v1/invoice_payments`` (basil+): ``invoice``, ``payment[payment_intent]``, ``status``."""
        with self._acting(account):
            book = self._pay

            def match(ip: InvoicePayment) -> bool:
                if invoice is not None and ip.invoice != invoice:
                    return False
                if payment_intent is not None and ip.payment_intent != payment_intent:
                    return False
                return status is None or self._invoice_payment_json(ip)["status"] == status

            ids = None
            if invoice is not None:
                own = book.payment_of_invoice.get(invoice)
                ids = [own] if own is not None else []
            return list_page(
                book.invoice_payments,
                kind="invoice_payment",
                url="/v1/invoice_payments",
                render=self._invoice_payment_json,
                match=match,
                created=created,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
                ids=ids,
            )

    def invoice_payments_of(self, invoice: str, *, account: str | None = None) -> JSON:
        """The invoice's ``payments`` list, as ``expand[]=payments`` includes it (basil+)."""
        out = self.list_invoice_payments(invoice=invoice, limit=100, account=account)
        out["url"] = f"/v1/invoices/{invoice}/payments"
        out["total_count"] = len(out["data"])
        return out
