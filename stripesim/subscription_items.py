"""Subscription items: the prices a subscription may hold together, their periods, and changing them.

A classic subscription's items share one interval (Stripe refuses others);
a flexible one's may differ, each item then renewing on its own schedule,
all counted from the subscription's ``billing_cycle_anchor``.
"""

from __future__ import annotations

from typing import Any

from .core import SimCore, operation
from .model import Price, SimError, SubItem, Subscription, add_interval, missing
from .shapes import JSON, is_basil

# the first version whose new subscriptions are flexible unless asked otherwise
FLEXIBLE_BY_DEFAULT = "2025-09-30"


class SubscriptionItemsMixin(SimCore):
    """Item rules shared by creation and changes, and ``update_subscription_items``."""

    def _item_specs(self, items: list[dict[str, Any]]) -> list[tuple[str, int]]:
        """``[{"price": ..., "quantity": ...}, ...]`` checked: (price id, quantity) each, prices known and distinct."""
        if not isinstance(items, list) or not items:
            raise SimError("Missing required param: items.", code="parameter_missing", param="items")
        specs: list[tuple[str, int]] = []
        for i, spec in enumerate(items):
            price = spec.get("price") if isinstance(spec, dict) else None
            if not isinstance(price, str) or not price:
                raise SimError(
                    f"Missing required param: items[{i}][price].", code="parameter_missing", param=f"items[{i}][price]"
                )
            if price not in self.prices:
                raise missing("price", price, f"items[{i}][price]")
            if any(price == p for p, _ in specs):
                raise SimError(
                    f"Cannot add multiple subscription items with the same price: {price}", param=f"items[{i}][price]"
                )
            try:
                quantity = int(spec.get("quantity", 1))
            except (TypeError, ValueError):
                raise SimError(
                    f"Invalid integer: {spec.get('quantity')}",
                    code="parameter_invalid_integer",
                    param=f"items[{i}][quantity]",
                ) from None
            if quantity < 0:
                raise SimError("Quantity must be a positive integer", param=f"items[{i}][quantity]")
            specs.append((price, quantity))
        return specs

    def _billing_mode(self, value: str | dict[str, Any] | None) -> str:
        """``billing_mode`` (a type or ``{"type": ...}``) for a new subscription; only basil+ versions know it."""
        kind = value.get("type") if isinstance(value, dict) else value
        if not is_basil(self.api_version):
            if kind is not None:
                raise SimError(
                    "Received unknown parameter: billing_mode", code="parameter_unknown", param="billing_mode"
                )
            return "classic"
        if kind is None:
            return "flexible" if self.api_version[:10] >= FLEXIBLE_BY_DEFAULT else "classic"
        if kind not in ("classic", "flexible"):
            raise SimError(
                f"Invalid billing_mode[type]: must be one of classic or flexible, not {kind}",
                param="billing_mode[type]",
            )
        return str(kind)

    def _check_intervals(self, mode: str, price_ids: list[str]) -> None:
        prices = [self._price(p) for p in price_ids]
        if len({p.currency for p in prices}) > 1:
            raise SimError("All prices on a subscription must have the same currency.", param="items")
        if mode != "flexible" and len({(p.interval, p.interval_count) for p in prices}) > 1:
            raise SimError(
                "All prices on a subscription must have the same `recurring.interval` and `recurring.interval_count`.",
                param="items",
            )

    def _restart_periods(self, sub: Subscription, start: int) -> None:
        """Every item's first period from ``start`` (the new billing cycle anchor)."""
        for it in sub.items:
            price = self._price(it.price)
            it.cycle = 0
            it.current_period_start = start
            it.current_period_end = add_interval(start, price.interval, price.interval_count, 1)

    def _period_for_new_item(self, sub: Subscription, price: Price) -> tuple[int, int, int]:
        """(cycle, start, end) of an item added now: its interval's current period, aligned to the anchor.

        Items already on that interval lend theirs; otherwise the period runs from
        now to the interval's next boundary after now. During a trial: the trial.
        """
        now = self.clock.now()
        if sub.status == "trialing" and sub.trial_end is not None:
            return 0, now, sub.trial_end
        for it in sub.items:
            other = self._price(it.price)
            if (other.interval, other.interval_count) == (price.interval, price.interval_count):
                return it.cycle, it.current_period_start, it.current_period_end
        n = 1
        while add_interval(sub.billing_cycle_anchor, price.interval, price.interval_count, n) <= now:
            n += 1
        return n - 1, now, add_interval(sub.billing_cycle_anchor, price.interval, price.interval_count, n)

    def _index_item(self, sub: Subscription, it: SubItem) -> None:
        self._ledger.item_sub[it.id] = sub.id

    @operation
    def update_subscription_items(
        self,
        subscription: str,
        *,
        add: list[dict[str, Any]] | None = None,
        remove: list[str] | None = None,
        quantities: dict[str, int] | None = None,
        account: str | None = None,
        prices: dict[str, str] | None = None,
    ) -> JSON:
        """Add items (``[{"price", "quantity"}]``), remove items (ids), change quantities or prices
        (``prices={si_...: price}``, a plan change); one ``updated``.

        Not prorated (as ``proration_behavior=none``): an added item is first
        billed when its period ends; see :meth:`_period_for_new_item`. A new
        price of the same interval is billed from the next renewal; one of
        another interval restarts a classic subscription's periods now
        (``billing_cycle_anchor`` = now) and invoices them at once
        (``subscription_update``), while a flexible one's item takes the
        period an added item would.
        """
        self._use(account)
        sub = self._sub(subscription)
        if sub.status in ("canceled", "incomplete_expired"):
            raise SimError(
                f"A canceled subscription can only update its cancellation_details and metadata. "
                f"Subscription {sub.id} is {sub.status}.",
                param="subscription",
            )
        gone = list(remove or [])
        new_prices = dict(prices or {})
        for ident in [*gone, *(quantities or {}), *new_prices]:
            if sub.item(ident) is None:
                raise missing("subscription_item", ident, "items")
        for ident, price in new_prices.items():
            self._price(price)
            if ident in gone:
                raise SimError(f"Subscription item {ident} cannot be both removed and changed", param="items")
        specs = self._item_specs(add) if add else []
        kept = [it for it in sub.items if it.id not in gone]
        kept_prices = [new_prices.get(it.id, it.price) for it in kept]
        every = kept_prices + [p for p, _ in specs]
        for price in every:
            if every.count(price) > 1:
                raise SimError(f"Cannot add multiple subscription items with the same price: {price}", param="items")
        if not kept and not specs:
            raise SimError(
                "A subscription must keep at least one item; cancel the subscription to end it.", param="items"
            )
        self._check_intervals(sub.billing_mode, kept_prices + [p for p, _ in specs])
        before = self.render.subscription(sub)
        for ident, qty in (quantities or {}).items():
            item = sub.item(ident)
            assert item is not None
            item.quantity = int(qty)
        sub.items = kept
        for ident in gone:
            self._ledger.item_sub.pop(ident, None)
        now = self.clock.now()
        reset = self._change_prices(sub, new_prices)
        for price_id, qty in specs:
            cycle, start, end = self._period_for_new_item(sub, self._price(price_id))
            it = SubItem(self.ids.new("si", 14), price_id, qty, now, start, end, cycle)
            sub.items.append(it)
            self._index_item(sub, it)
        invoice = None
        if reset and sub.status in ("active", "past_due"):
            invoice = self._new_invoice(sub, "subscription_update", period_start=now, period_end=now)
        if sub.status in ("active", "past_due", "unpaid"):
            # a renewal that no longer matches an item's period end is skipped when it falls due
            self._schedule(sub.current_period_end, "renew", sub.id, sub.token)
        self._sub_changed(before, sub)
        if invoice is not None:
            self._inv_event("invoice.created", invoice)
            self._finalize(invoice)
            self._charge(invoice)
        return self.render.subscription(sub)

    def _change_prices(self, sub: Subscription, prices: dict[str, str]) -> bool:
        """Give items their new prices; True when a classic subscription's periods restarted (another interval)."""
        reset = False
        for ident, price_id in prices.items():
            item = sub.item(ident)
            assert item is not None
            old, new = self._price(item.price), self._price(price_id)
            item.price = price_id
            if (old.interval, old.interval_count) == (new.interval, new.interval_count):
                continue
            if sub.billing_mode == "flexible":
                position = sub.items.index(item)
                del sub.items[position]  # the item must not lend itself its old period
                try:
                    item.cycle, item.current_period_start, item.current_period_end = self._period_for_new_item(sub, new)
                finally:
                    sub.items.insert(position, item)
            else:
                reset = True
        if reset and sub.status != "trialing":
            sub.billing_cycle_anchor = self.clock.now()
            self._restart_periods(sub, sub.billing_cycle_anchor)
        return reset

    @operation
    def change_subscription_price(
        self,
        subscription: str,
        price: str,
        *,
        item: str | None = None,
        quantity: int | None = None,
        account: str | None = None,
    ) -> JSON:
        """A plan change: the item (``item``, or the only one) gets ``price`` (and ``quantity``); one ``updated``.

        As ``update_subscription_items(prices={item: price})``; the item keeps its id.
        """
        self._use(account)
        sub = self._sub(subscription)
        if item is None:
            if len(sub.items) != 1:
                raise SimError("The subscription has several items: say which one (item=si_...)", param="item")
            item = sub.items[0].id
        return self.update_subscription_items(
            subscription,
            prices={item: price},
            quantities=None if quantity is None else {item: int(quantity)},
            account=account,
        )
