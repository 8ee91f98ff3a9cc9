"""Checkout sessions: create, complete (with a delayed payment or not), expire."""

from __future__ import annotations

from .core import DEFAULT_PRICE, SimCore, operation
from .model import CheckoutSession, SimError
from .shapes import JSON


class CheckoutMixin(SimCore):
    """Checkout sessions in ``payment`` and ``subscription`` mode and their timed ``checkout_expire``."""

    @operation
    def create_checkout_session(
        self,
        *,
        mode: str = "payment",
        customer: str | None = None,
        customer_email: str | None = None,
        price: str | None = None,
        amount_total: int | None = None,
        currency: str = "usd",
        trial_days: int | None = None,
        metadata: dict[str, str] | None = None,
        client_reference_id: str | None = None,
        quantity: int = 1,
        account: str | None = None,
    ) -> JSON:
        """An open session (no event, as Stripe). It expires by itself after ``checkout_expiry``."""
        self._use(account)
        if mode not in ("payment", "subscription"):
            raise SimError("mode must be payment or subscription", param="mode")
        if customer is not None:
            self._live_customer(customer)
        if mode == "subscription":
            price = price or DEFAULT_PRICE
            p = self._price(price)
            currency = p.currency
            amount = 0 if trial_days else p.unit_amount * int(quantity)
        else:
            if amount_total is None:
                if price is None:
                    raise SimError("amount_total or price is required in payment mode", param="amount_total")
                p = self._price(price)
                amount_total = p.unit_amount * int(quantity)
                currency = p.currency
            amount = int(amount_total)
        now = self.clock.now()
        cs = CheckoutSession(
            id=("cs_live_" if self.livemode else "cs_test_") + self.ids.new("x", 58)[2:],
            mode=mode,
            status="open",
            payment_status="unpaid",
            created=now,
            expires_at=now + self.checkout_expiry,
            currency=currency.lower(),
            amount_total=amount,
            customer=customer,
            customer_email=customer_email,
            price=price,
            quantity=int(quantity),
            client_reference_id=client_reference_id,
            metadata=dict(metadata or {}),
            trial_days=trial_days,
        )
        self.sessions[cs.id] = cs
        self._schedule(cs.expires_at, "checkout_expire", cs.id, 0)
        return self.render.checkout_session(cs)

    @operation
    def complete_checkout_session(
        self, session: str, async_payment: bool = False, *, account: str | None = None
    ) -> JSON:
        """The customer completes the session.

        ``payment`` mode: ``checkout.session.completed`` with ``payment_status``
        ``paid`` (or ``unpaid`` when ``async_payment``, then resolve it with
        :meth:`checkout_async_payment`). ``subscription`` mode: the customer (if
        new), the subscription and its first invoice events come first.
        """
        self._use(account)
        cs = self._session(session)
        if cs.status != "open":
            raise SimError(f"Checkout session {cs.id} is {cs.status}", param="session")
        if cs.customer is None:
            email = cs.customer_email or f"customer{len(self.customers) + 1}@example.com"
            cus = self._new_customer(email, None, None)
            self._emit("customer.created", self.render.customer(cus))
            cs.customer = cus.id
        cus = self.customers[cs.customer]
        if cs.mode == "payment":
            self._checkout_payment(cs, async_payment)
            cs.payment_status = "unpaid" if async_payment else "paid"
        else:
            assert cs.price is not None
            sub = self._start_subscription(
                cus,
                [(cs.price, cs.quantity)],
                trial_days=cs.trial_days,
                trial_end=None,
                payment_behavior="default_incomplete" if async_payment else "allow_incomplete",
                metadata=cs.metadata,
                force_success=True,
            )
            cs.subscription = sub.id
            cs.invoice = sub.latest_invoice
            if cs.trial_days:
                cs.payment_status = "no_payment_required"
            else:
                cs.payment_status = "unpaid" if async_payment else "paid"
        cs.status = "complete"
        self._emit("checkout.session.completed", self.render.checkout_session(cs))
        return self.render.checkout_session(cs)

    @operation
    def checkout_async_payment(self, session: str, succeeded: bool = True, *, account: str | None = None) -> JSON:
        """Resolve a delayed payment: ``checkout.session.async_payment_succeeded`` / ``_failed``."""
        self._use(account)
        cs = self._session(session)
        if cs.status != "complete" or cs.payment_status != "unpaid":
            raise SimError(f"Checkout session {cs.id} has no pending payment", param="session")
        if cs.mode == "subscription" and cs.invoice:
            inv = self.invoices[cs.invoice]
            if succeeded:
                self._charge(inv, force_success=True)
            else:
                cus = self.customers[inv.customer]
                saved = (cus.fail_remaining, cus.fail_until_new_card)
                cus.fail_until_new_card = True
                self._charge(inv)
                cus.fail_remaining, cus.fail_until_new_card = saved
        elif cs.mode == "payment":
            self._checkout_payment_settled(cs, succeeded)
        if succeeded:
            cs.payment_status = "paid"
            self._emit("checkout.session.async_payment_succeeded", self.render.checkout_session(cs))
        else:
            self._emit("checkout.session.async_payment_failed", self.render.checkout_session(cs))
        return self.render.checkout_session(cs)

    @operation
    def expire_checkout_session(self, session: str, *, account: str | None = None) -> JSON:
        self._use(account)
        cs = self._session(session)
        if cs.status != "open":
            raise SimError(f"Checkout session {cs.id} is {cs.status}", param="session")
        self._expire_session(cs)
        return self.render.checkout_session(cs)

    def _expire_session(self, cs: CheckoutSession) -> None:
        cs.status = "expired"
        self._emit("checkout.session.expired", self.render.checkout_session(cs))

    def _on_checkout_expire(self, ident: str, _token: int) -> None:
        cs = self.sessions[ident]
        if cs.status == "open":
            self._expire_session(cs)
