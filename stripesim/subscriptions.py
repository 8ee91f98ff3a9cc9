"""Subscriptions: create and start, cancel (now or at period end), uncancel, metadata, pause, resume."""

from __future__ import annotations

from typing import Any

from .core import DEFAULT_PRICE, SimCore, operation, previous_attributes
from .model import DAY, Customer, SimError, SubItem, Subscription, add_interval
from .shapes import JSON


class SubscriptionsMixin(SimCore):
    """What an API call does to a subscription."""

    def _index_sub(self, sub: Subscription) -> None:
        self.subscriptions[sub.id] = sub
        self._sub_pos[sub.id] = len(self._sub_ids)
        self._sub_ids.append(sub.id)
        self._subs_by_customer.setdefault(sub.customer, []).append(sub.id)
        for it in sub.items:
            self._index_item(sub, it)

    @operation
    def create_subscription(
        self,
        customer: str,
        *,
        price: str = DEFAULT_PRICE,
        trial_days: int | None = None,
        trial_end: int | str | None = None,
        payment_behavior: str = "allow_incomplete",
        metadata: dict[str, str] | None = None,
        quantity: int = 1,
        items: list[dict[str, Any]] | None = None,
        billing_mode: str | dict[str, Any] | None = None,
        account: str | None = None,
    ) -> JSON:
        """Subscribe a customer, as ``POST /v1/subscriptions`` does.

        One item (``price``, ``quantity``), or several: ``items=[{"price": ...,
        "quantity": ...}, ...]``. ``billing_mode`` (basil+ only): ``classic`` or
        ``flexible`` (the default from 2025-09-30.clover on); only flexible
        allows items of different intervals, each renewing on its own.
        Without a trial the first invoice (``subscription_create``) is created,
        finalized and charged at once; the subscription is created
        ``incomplete`` and becomes ``active`` when that payment succeeds.
        ``payment_behavior``: ``allow_incomplete`` (a failed first payment
        leaves it ``incomplete``, ``incomplete_expired`` after 23 h),
        ``default_incomplete`` (no attempt: pay it with ``pay_open_invoice``),
        ``error_if_incomplete`` (a failing card is a 402 and nothing is created).
        ``trial_end="now"`` (Stripe's special value): no trial at all, even with
        ``trial_days``; the first period starts now and its invoice is charged.
        """
        self._use(account)
        end = self._trial_end_param(trial_end)
        if trial_end == "now":
            trial_days = None
        cus = self._live_customer(customer)
        if items is not None and (price != DEFAULT_PRICE or quantity != 1):
            raise SimError("You may only specify one of these parameters: items, price.", param="items")
        if items is None:
            self._price(price)
        specs = self._item_specs(items if items is not None else [{"price": price, "quantity": quantity}])
        mode = self._billing_mode(billing_mode)
        self._check_intervals(mode, [p for p, _ in specs])
        if payment_behavior not in ("allow_incomplete", "default_incomplete", "error_if_incomplete"):
            raise SimError("Invalid payment_behavior", param="payment_behavior")
        no_trial = not trial_days and end is None
        if payment_behavior == "error_if_incomplete" and no_trial and self._payment_fails(cus, peek=True):
            raise SimError("Your card was declined.", status=402, type="card_error", code="card_declined")
        sub = self._start_subscription(
            cus,
            specs,
            trial_days=trial_days,
            trial_end=end,
            payment_behavior=payment_behavior,
            metadata=metadata,
            billing_mode=mode,
        )
        return self.render.subscription(sub)

    @staticmethod
    def _trial_end_param(value: int | str | None) -> int | None:
        """``trial_end``: a unix time, or ``"now"`` (None: no trial)."""
        if value is None or value == "now":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SimError(
                f"Invalid trial_end: must be an integer Unix timestamp or 'now', not {value!r}", param="trial_end"
            ) from None

    def _start_subscription(
        self,
        cus: Customer,
        items: list[tuple[str, int]],
        *,
        trial_days: int | None,
        trial_end: int | None,
        payment_behavior: str,
        metadata: dict[str, str] | None,
        billing_mode: str | None = None,
        force_success: bool = False,
    ) -> Subscription:
        """A new subscription of ``items`` ((price id, quantity) each); ``billing_mode`` None: the version's default."""
        prices = [self._price(price_id) for price_id, _ in items]
        now = self.clock.now()
        if trial_days:
            trial_end = now + int(trial_days) * DAY
        trialing = trial_end is not None
        if trialing:
            assert trial_end is not None
            if trial_end <= now:
                raise SimError("trial_end must be in the future", param="trial_end")
        sid = self.ids.new("sub")
        sub = Subscription(
            id=sid,
            customer=cus.id,
            items=[
                SubItem(
                    id=self.ids.new("si", 14),
                    price=price.id,
                    quantity=int(qty),
                    created=now,
                    current_period_start=now,
                    current_period_end=(
                        trial_end
                        if trial_end is not None
                        else add_interval(now, price.interval, price.interval_count, 1)
                    ),
                )
                for price, (_, qty) in zip(prices, items, strict=True)
            ],
            status="trialing" if trialing else "incomplete",
            created=now,
            start_date=now,
            billing_cycle_anchor=trial_end if trial_end is not None else now,
            billing_mode=billing_mode or self._billing_mode(None),
            trial_start=now if trialing else None,
            trial_end=trial_end,
            metadata=dict(metadata or {}),
        )
        self._index_sub(sub)
        inv = self._new_invoice(sub, "subscription_create", period_start=now, period_end=now, free=trialing)
        self._emit("customer.subscription.created", self.render.subscription(sub))
        self._inv_event("invoice.created", inv)
        if trial_end is not None:
            self._finalize(inv)
            self._charge(inv, force_success=True)
            warn_at = max(now, trial_end - self.trial_will_end_days * DAY)
            self._schedule(warn_at, "trial_will_end", sub.id, sub.token)
            self._schedule(trial_end, "trial_end", sub.id, sub.token)
            return sub
        self._finalize(inv)
        if payment_behavior != "default_incomplete":
            self._charge(inv, force_success=force_success)
        if sub.status == "incomplete":
            self._schedule(now + self.incomplete_expiry, "incomplete_expire", sub.id, sub.token)
        self._schedule(sub.current_period_end, "renew", sub.id, sub.token)
        return sub

    def _end_now(self, sub: Subscription, reason: str, comment: str | None = None, feedback: str | None = None) -> None:
        """Cancel at once: ``customer.subscription.deleted``.

        Like Stripe, open invoices of the subscription are left open but no
        longer collected automatically (``auto_advance`` false, no next attempt).
        """
        now = self.clock.now()
        sub.status = "canceled"
        sub.ended_at = now
        if sub.canceled_at is None or reason == "payment_failed":
            sub.canceled_at = now
        sub.cancellation_reason = reason
        if comment is not None:
            sub.cancellation_comment = comment
        if feedback is not None:
            sub.cancellation_feedback = feedback
        sub.token += 1
        self._sub_changed({}, sub, "customer.subscription.deleted")
        for iid in self._invs_by_sub.get(sub.id, []):
            inv = self.invoices[iid]
            if inv.status == "open" and (inv.auto_advance or inv.next_payment_attempt is not None):
                b = self.render.invoice(inv)
                inv.auto_advance = False
                inv.next_payment_attempt = None
                inv.token += 1
                self._inv_event("invoice.updated", inv, b)
            elif inv.status == "draft":
                inv.token += 1  # never finalized

    @operation
    def cancel_subscription(
        self,
        subscription: str,
        *,
        at_period_end: bool = False,
        comment: str | None = None,
        feedback: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """Cancel now (``customer.subscription.deleted``) or at period end (``updated`` now, ``deleted`` then).

        At period end means the end of the period that ends first, as Stripe
        resolves ``cancel_at_period_end`` for items of mixed intervals.
        """
        self._use(account)
        sub = self._sub(subscription)
        if sub.status in ("canceled", "incomplete_expired"):
            raise SimError(
                f"A canceled subscription can only update its cancellation_details and metadata. "
                f"Subscription {sub.id} is {sub.status}.",
                param="subscription",
            )
        if not at_period_end:
            self._end_now(sub, "cancellation_requested", comment, feedback)
            return self.render.subscription(sub)
        before = self.render.subscription(sub)
        sub.cancel_at_period_end = True
        sub.cancel_at = sub.current_period_end
        sub.canceled_at = self.clock.now()
        sub.cancellation_reason = "cancellation_requested"
        if comment is not None:
            sub.cancellation_comment = comment
        if feedback is not None:
            sub.cancellation_feedback = feedback
        self._sub_changed(before, sub)
        return self.render.subscription(sub)

    @operation
    def uncancel_subscription(self, subscription: str, *, account: str | None = None) -> JSON:
        """Undo a cancel-at-period-end (``cancel_at_period_end=false``)."""
        self._use(account)
        sub = self._sub(subscription)
        if not sub.cancel_at_period_end:
            raise SimError(f"Subscription {sub.id} is not set to cancel", param="subscription")
        before = self.render.subscription(sub)
        sub.cancel_at_period_end = False
        sub.cancel_at = None
        sub.canceled_at = None
        sub.cancellation_reason = None
        sub.cancellation_comment = None
        sub.cancellation_feedback = None
        self._sub_changed(before, sub)
        return self.render.subscription(sub)

    @operation
    def update_subscription_metadata(
        self, subscription: str, metadata: dict[str, str], *, account: str | None = None
    ) -> JSON:
        self._use(account)
        sub = self._sub(subscription)
        before = self.render.subscription(sub)
        for key, value in metadata.items():
            if value in (None, ""):
                sub.metadata.pop(key, None)
            else:
                sub.metadata[key] = str(value)
        self._sub_changed(before, sub)
        return self.render.subscription(sub)

    @operation
    def pause_subscription(self, subscription: str, *, account: str | None = None) -> JSON:
        """Status ``paused``: ``customer.subscription.paused`` then ``updated``; no renewals."""
        self._use(account)
        sub = self._sub(subscription)
        if sub.status not in ("active", "trialing", "past_due"):
            raise SimError(f"Subscription {sub.id} cannot be paused from {sub.status}", param="subscription")
        before = self.render.subscription(sub)
        sub.status = "paused"
        sub.token += 1
        after = self.render.subscription(sub)
        self._emit("customer.subscription.paused", after)
        self._emit("customer.subscription.updated", self.render.subscription(sub), previous_attributes(before, after))
        return self.render.subscription(sub)

    @operation
    def resume_subscription(self, subscription: str, *, account: str | None = None) -> JSON:
        """Back to ``active`` with a new period from now (``billing_cycle_anchor=now``), invoiced at once."""
        self._use(account)
        sub = self._sub(subscription)
        if sub.status != "paused":
            raise SimError(f"Subscription {sub.id} is not paused", param="subscription")
        now = self.clock.now()
        before = self.render.subscription(sub)
        sub.status = "active"
        sub.billing_cycle_anchor = now
        self._restart_periods(sub, now)
        sub.token += 1
        inv = self._new_invoice(sub, "subscription_cycle", period_start=now, period_end=now)
        after = self.render.subscription(sub)
        self._emit("customer.subscription.resumed", after)
        self._emit("customer.subscription.updated", self.render.subscription(sub), previous_attributes(before, after))
        self._inv_event("invoice.created", inv)
        self._finalize(inv)
        self._charge(inv)
        self._schedule(sub.current_period_end, "renew", sub.id, sub.token)
        return self.render.subscription(sub)
