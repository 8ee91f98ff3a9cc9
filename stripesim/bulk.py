"""Bulk population: many customers with one subscription each, fast and by default without events."""

from __future__ import annotations

from .core import DEFAULT_PRICE, SimCore, operation
from .model import Price, SimError, SubItem, Subscription, add_interval
from .shapes import JSON


class BulkMixin(SimCore):
    """Large populations for benchmarks and listing tests."""

    @operation
    def bulk_create(
        self,
        n: int,
        *,
        price: str = DEFAULT_PRICE,
        status: str = "active",
        emit_events: bool = False,
        spread_seconds: int = 0,
        canceled_every: int = 0,
        with_invoices: bool = True,
        return_ids: bool = True,
        quiet: bool | None = None,
        account: str | None = None,
    ) -> JSON:
        """Create ``n`` customers with one subscription each, fast.

        Without events by default; such a population also renews (periods,
        invoices, payments) without events unless ``quiet=False``, so that a
        large one costs little when the clock moves. ``spread_seconds`` backdates each
        subscription's billing anchor by a random amount (so renewals spread
        out); ``canceled_every=k`` makes every k-th one ``canceled``.
        """
        self._use(account)
        p = self._price(price)
        if status not in ("active", "trialing", "past_due", "canceled", "unpaid", "paused"):
            raise SimError("unsupported bulk status", param="status")
        now = self.clock.now()
        ids: list[str] = []
        periods: dict[int, tuple[int, int, int]] = {}
        for i in range(int(n)):
            if emit_events:
                cus = self._new_customer(f"bulk{len(self.customers) + 1}@example.com", None, None)
                self._emit("customer.created", self.render.customer(cus))
                sub = self._start_subscription(
                    cus,
                    [(price, 1)],
                    trial_days=None,
                    trial_end=None,
                    payment_behavior="allow_incomplete",
                    metadata=None,
                    force_success=True,
                )
                ids.append(sub.id)
                continue
            cus = self._new_customer(f"bulk{len(self.customers) + 1}@example.com", None, None)
            anchor = now - (self.rng.randrange(spread_seconds) if spread_seconds > 0 else 0)
            if anchor not in periods:
                periods[anchor] = self._current_period(anchor, p, now)
            cycle, start, end = periods[anchor]
            st = "canceled" if canceled_every and (i + 1) % canceled_every == 0 else status
            sid = self.ids.new("sub")
            sub = Subscription(
                id=sid,
                customer=cus.id,
                items=[SubItem(self.ids.new("si", 14), p.id, 1, now, start, end, cycle)],
                status=st,
                created=now,
                start_date=anchor,
                billing_cycle_anchor=anchor,
                billing_mode=self._billing_mode(None),
                quiet=(not emit_events) if quiet is None else quiet,
            )
            if st == "canceled":
                sub.canceled_at = sub.ended_at = now
                sub.cancellation_reason = "cancellation_requested"
            self._index_sub(sub)
            if with_invoices:
                inv = self._new_invoice(sub, "subscription_create", period_start=anchor, period_end=anchor)
                inv.status = "paid"
                inv.attempted = True
                inv.attempt_count = 1
                inv.amount_paid = inv.amount_due
                inv.finalized_at = inv.paid_at = now
            if st in ("active", "past_due", "unpaid"):
                self._schedule(end, "renew", sub.id, sub.token)
            ids.append(sub.id)
        out: JSON = {"created": len(ids), "first": ids[0] if ids else None, "last": ids[-1] if ids else None}
        if return_ids:
            out["subscriptions"] = ids
        return out

    @staticmethod
    def _current_period(anchor: int, price: Price, now: int) -> tuple[int, int, int]:
        """(cycle, start, end) of the period containing ``now`` for a billing anchor."""
        cycle = 0
        end = add_interval(anchor, price.interval, price.interval_count, 1)
        while end <= now:
            cycle += 1
            end = add_interval(anchor, price.interval, price.interval_count, cycle + 1)
        return cycle, add_interval(anchor, price.interval, price.interval_count, cycle), end
