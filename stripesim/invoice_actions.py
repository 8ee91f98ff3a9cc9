"""Invoices changed by hand: finalize a draft, void, mark uncollectible (``POST /v1/invoices/{id}/...``)."""

from __future__ import annotations

from .core import SimCore, operation
from .model import Invoice, SimError
from .shapes import JSON


class InvoiceActionsMixin(SimCore):
    """``finalize_invoice``, ``void_invoice``, ``mark_uncollectible`` and the payment attempt after finalizing."""

    @operation
    def finalize_invoice(self, invoice: str, *, auto_advance: bool | None = None, account: str | None = None) -> JSON:
        """A draft becomes ``open`` (``invoice.finalized``).

        With ``auto_advance`` (the invoice's own, unless given) Stripe then
        attempts the payment by itself: here when the clock next moves
        (``advance(0)`` is enough), with its usual events.
        """
        self._use(account)
        inv = self._inv(invoice)
        if inv.status != "draft":
            raise SimError(
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.", param="invoice"
            )
        if auto_advance is not None:
            inv.auto_advance = bool(auto_advance)
        self._finalize(inv)
        if inv.auto_advance:
            inv.token += 1
            self._schedule(self.clock.now(), "attempt", inv.id, inv.token)
        return self.render.invoice(inv)

    def _on_attempt(self, ident: str, token: int) -> None:
        inv = self.invoices[ident]
        if token != inv.token or inv.status != "open" or not inv.auto_advance:
            return
        self._charge(inv)

    @operation
    def void_invoice(self, invoice: str, *, account: str | None = None) -> JSON:
        """An open or uncollectible invoice becomes ``void`` (``invoice.voided``); no more attempts."""
        self._use(account)
        inv = self._inv(invoice)
        if inv.status not in ("open", "uncollectible"):
            raise SimError(
                f"You can only void an open or uncollectible invoice; this one is {inv.status}.", param="invoice"
            )
        inv.status = "void"
        inv.voided_at = self.clock.now()
        self._stop_collecting(inv)
        self._inv_event("invoice.voided", inv)
        self._after_settled(inv)
        return self.render.invoice(inv)

    @operation
    def mark_uncollectible(self, invoice: str, *, account: str | None = None) -> JSON:
        """An open invoice becomes ``uncollectible`` (``invoice.marked_uncollectible``); no more attempts."""
        self._use(account)
        inv = self._inv(invoice)
        if inv.status != "open":
            raise SimError(
                f"You can only mark an open invoice uncollectible; this one is {inv.status}.", param="invoice"
            )
        inv.status = "uncollectible"
        inv.marked_uncollectible_at = self.clock.now()
        self._stop_collecting(inv)
        self._inv_event("invoice.marked_uncollectible", inv)
        self._after_settled(inv)
        return self.render.invoice(inv)

    @staticmethod
    def _stop_collecting(inv: Invoice) -> None:
        inv.next_payment_attempt = None
        inv.auto_advance = False
        inv.token += 1  # a pending retry or attempt is forgotten

    def _after_settled(self, inv: Invoice) -> None:
        """A ``past_due`` subscription whose open invoices are all settled by hand is ``active`` again."""
        sub = self.subscriptions.get(inv.subscription or "")
        if sub is None or sub.status != "past_due":
            return
        if any(self.invoices[i].status == "open" for i in self._invs_by_sub.get(sub.id, [])):
            return
        before = self.render.subscription(sub)
        sub.status = "active"
        self._sub_changed(before, sub)
