"""Invoices and dunning: a new invoice, finalization, payment attempts, retries, the end of dunning, paying by hand."""

from __future__ import annotations

from .core import SimCore, operation
from .model import DAY, Invoice, InvoiceLine, SimError, SubItem, Subscription
from .shapes import JSON


class InvoicesMixin(SimCore):
    """Invoices of subscriptions, their payment and the timed ``finalize`` and ``retry``."""

    def _new_invoice(
        self,
        sub: Subscription,
        billing_reason: str,
        *,
        period_start: int,
        period_end: int,
        items: list[SubItem] | None = None,
        free: bool = False,
    ) -> Invoice:
        """A draft billing ``items`` (all by default), one line each for its current period; ``free``: 0 each."""
        billed = sub.items if items is None else items
        iid = self.ids.new("in")
        lines = [
            InvoiceLine(
                id=self.ids.new("il"),
                subscription_item=it.id,
                price=it.price,
                quantity=it.quantity,
                unit_amount=0 if free else self._price(it.price).unit_amount,
                period_start=it.current_period_start,
                period_end=it.current_period_end,
            )
            for it in billed
        ]
        currency = self._price(billed[0].price).currency
        lines += self._pending_item_lines(sub, iid, currency)
        inv = Invoice(
            id=iid,
            customer=sub.customer,
            subscription=sub.id,
            status="draft",
            amount_due=sum(ln.amount for ln in lines),
            currency=currency,
            created=self.clock.now(),
            billing_reason=billing_reason,
            period_start=period_start,
            period_end=period_end,
            lines=lines,
            sub_metadata=dict(sub.metadata),
        )
        self.invoices[inv.id] = inv
        self._inv_pos[inv.id] = len(self._inv_ids)
        self._inv_ids.append(inv.id)
        self._invs_by_sub.setdefault(sub.id, []).append(inv.id)
        sub.latest_invoice = inv.id
        return inv

    def _finalize(self, inv: Invoice) -> None:
        inv.status = "open"
        inv.finalized_at = self.clock.now()
        cus = self.customers[inv.customer]
        inv.number = f"{cus.invoice_prefix}-{cus.next_invoice_sequence:04d}"
        cus.next_invoice_sequence += 1
        self._open_payment(inv)
        self._inv_event("invoice.finalized", inv)

    def _charge(self, inv: Invoice, *, force_success: bool = False) -> bool:
        """One payment attempt on an open invoice, with its events and effects."""
        sub = self.subscriptions.get(inv.subscription or "")
        cus = self.customers[inv.customer]
        fails = not force_success and inv.amount_due > 0 and self._payment_fails(cus)
        if inv.amount_due > 0:
            inv.attempt_count += 1
        inv.attempted = True
        if not fails:
            inv.status = "paid"
            inv.amount_paid = inv.amount_due
            inv.paid_at = self.clock.now()
            inv.next_payment_attempt = None
            inv.token += 1
            if inv.amount_due > 0:
                self._settle_payment(inv, succeeded=True)
            self._inv_event("invoice.paid", inv)
            self._inv_event("invoice.payment_succeeded", inv)
            if sub is not None:
                self._after_paid(sub)
            return True
        # failure
        self._settle_payment(inv, succeeded=False)
        if sub is not None and sub.status == "incomplete" and inv.billing_reason == "subscription_create":
            inv.next_payment_attempt = None  # a first invoice is not retried
            self._inv_event("invoice.payment_failed", inv)
            return False
        if inv.first_failed_at is None:
            inv.first_failed_at = self.clock.now()
        has_retry = inv.retries_done < len(self.retry_schedule_days)
        if has_retry:
            due = inv.first_failed_at + int(self.retry_schedule_days[inv.retries_done] * DAY)
            due = max(due, self.clock.now() + 1)
            inv.next_payment_attempt = due
            inv.token += 1
            self._schedule(due, "retry", inv.id, inv.token)
        else:
            inv.next_payment_attempt = None
        self._inv_event("invoice.payment_failed", inv)
        if sub is not None:
            if sub.status in ("active", "trialing"):
                b = self.render.subscription(sub)
                sub.status = "past_due"
                self._sub_changed(b, sub)
            if not has_retry and sub.status == "past_due":
                self._dunning_end(inv, sub)
        return False

    def _after_paid(self, sub: Subscription) -> None:
        if sub.status not in ("past_due", "unpaid", "incomplete"):
            return
        for iid in self._invs_by_sub.get(sub.id, []):
            if self.invoices[iid].status in ("open", "uncollectible"):
                return
        before = self.render.subscription(sub)
        sub.status = "active"
        self._sub_changed(before, sub)

    def _dunning_end(self, inv: Invoice, sub: Subscription) -> None:
        """All retries failed: cancel, mark unpaid, or leave past_due."""
        if self.dunning_end == "canceled":
            self._end_now(sub, "payment_failed")
        elif self.dunning_end == "unpaid":
            before = self.render.subscription(sub)
            sub.status = "unpaid"
            self._sub_changed(before, sub)
            inv.status = "uncollectible"
            inv.marked_uncollectible_at = self.clock.now()
            inv.next_payment_attempt = None
            inv.token += 1
            self._inv_event("invoice.marked_uncollectible", inv)

    @operation
    def pay_open_invoice(
        self,
        subscription: str | None = None,
        invoice: str | None = None,
        new_card: bool = True,
        *,
        account: str | None = None,
    ) -> JSON:
        """Pay an open (or uncollectible) invoice now, by default with a new card.

        Without ``invoice``, the subscription's oldest unpaid invoice. A new card
        clears the customer's failure flags (``customer.updated``). The payment
        succeeds (``invoice.paid`` + ``invoice.payment_succeeded``); a
        ``past_due``/``unpaid``/``incomplete`` subscription with nothing else
        unpaid becomes ``active``.
        """
        self._use(account)
        if invoice is not None:
            inv = self._inv(invoice)
        elif subscription is not None:
            sub = self._sub(subscription)
            candidates = [
                self.invoices[i]
                for i in self._invs_by_sub.get(sub.id, [])
                if self.invoices[i].status in ("open", "uncollectible")
            ]
            if not candidates:
                raise SimError(f"Subscription {sub.id} has no open invoice", param="subscription")
            inv = candidates[0]
        else:
            raise SimError("subscription or invoice is required", param="subscription")
        if inv.status in ("paid", "void"):
            raise SimError(f"Invoice {inv.id} is already {inv.status}", code="invoice_not_open", param="invoice")
        cus = self.customers[inv.customer]
        if new_card:
            self._attach_card(cus)
        if inv.status == "draft":
            self._finalize(inv)
        self._charge(inv, force_success=new_card)
        return self.render.invoice(inv)

    def _on_finalize(self, ident: str, token: int) -> None:
        inv = self.invoices[ident]
        if token != inv.token or inv.status != "draft":
            return
        sub = self.subscriptions.get(inv.subscription or "")
        if sub is not None and sub.status in ("unpaid", "canceled", "incomplete_expired", "paused"):
            return  # Stripe leaves these drafts alone
        self._finalize(inv)
        self._charge(inv)

    def _on_retry(self, ident: str, token: int) -> None:
        inv = self.invoices[ident]
        if token != inv.token or inv.status != "open":
            return
        inv.retries_done += 1
        self._charge(inv)
