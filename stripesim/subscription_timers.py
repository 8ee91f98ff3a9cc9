"""What the clock does to a subscription: renewal at period end, trial end and its warning, incomplete expiry."""

from __future__ import annotations

from .core import SimCore
from .model import add_interval


class SubscriptionTimersMixin(SimCore):
    """Timed actions on subscriptions (``renew``, ``trial_will_end``, ``trial_end``, ``incomplete_expire``)."""

    def _on_renew(self, ident: str, token: int) -> None:
        """The items whose period ends now renew together: one ``updated``, one invoice with a line each."""
        sub = self.subscriptions[ident]
        if token != sub.token or sub.status not in ("active", "past_due", "unpaid"):
            return
        t = self.clock.now()
        due = [it for it in sub.items if it.current_period_end == t]
        if not due:
            return  # an item change moved the renewal; another one is scheduled
        if sub.cancel_at is not None and sub.cancel_at <= t:
            self._end_now(sub, sub.cancellation_reason or "cancellation_requested")
            return
        before = self.render.subscription(sub)
        old_start = max(it.current_period_start for it in due)
        for it in due:
            price = self._price(it.price)
            it.cycle += 1
            it.current_period_start = t
            it.current_period_end = add_interval(
                sub.billing_cycle_anchor, price.interval, price.interval_count, it.cycle + 1
            )
        inv = self._new_invoice(sub, "subscription_cycle", period_start=old_start, period_end=t, items=due)
        self._sub_changed(before, sub)
        self._inv_event("invoice.created", inv)
        self._schedule(t + self.finalize_delay, "finalize", inv.id, inv.token)
        self._schedule(sub.current_period_end, "renew", sub.id, sub.token)

    def _on_trial_will_end(self, ident: str, token: int) -> None:
        sub = self.subscriptions[ident]
        if token != sub.token or sub.status != "trialing":
            return
        self._emit("customer.subscription.trial_will_end", self.render.subscription(sub))

    def _on_trial_end(self, ident: str, token: int) -> None:
        sub = self.subscriptions[ident]
        if token != sub.token or sub.status != "trialing":
            return
        t = sub.current_period_end
        if sub.cancel_at is not None and sub.cancel_at <= t:
            self._end_now(sub, sub.cancellation_reason or "cancellation_requested")
            return
        before = self.render.subscription(sub)
        old_start = sub.current_period_start
        sub.status = "active"
        sub.billing_cycle_anchor = t
        self._restart_periods(sub, t)
        inv = self._new_invoice(sub, "subscription_cycle", period_start=old_start, period_end=t)
        self._sub_changed(before, sub)
        self._inv_event("invoice.created", inv)
        self._schedule(t + self.finalize_delay, "finalize", inv.id, inv.token)
        self._schedule(sub.current_period_end, "renew", sub.id, sub.token)

    def _on_incomplete_expire(self, ident: str, token: int) -> None:
        """First invoice unpaid after 23 h: ``incomplete_expired``, its invoice voided."""
        sub = self.subscriptions[ident]
        if token != sub.token or sub.status != "incomplete":
            return
        now = self.clock.now()
        before = self.render.subscription(sub)
        sub.status = "incomplete_expired"
        sub.ended_at = now
        sub.canceled_at = now
        sub.token += 1
        self._sub_changed(before, sub)
        for iid in self._invs_by_sub.get(sub.id, []):
            inv = self.invoices[iid]
            if inv.status == "open":
                inv.status = "void"
                inv.voided_at = now
                inv.next_payment_attempt = None
                inv.token += 1
                self._inv_event("invoice.voided", inv)
