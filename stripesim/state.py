"""The simulator: Stripe-like objects, a state machine and a simulated clock.

Everything happens under one re-entrant lock. Operations named like API calls
(``create_subscription``, ``cancel_subscription``...) emit their events at the
current simulated time; :meth:`Simulator.advance` runs everything that falls
due (renewals, invoice finalization and payment, dunning retries, trial ends,
checkout expiry) in time order, each at its own simulated time.
"""

from __future__ import annotations

import bisect
import copy
import fnmatch
import functools
import heapq
import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .clock import SimClock
from .delivery import DeliverySettings, Endpoint, WebhookDelivery
from .ids import IdFactory, SeededRandom
from .listing import paginate
from .model import (
    DAY,
    CheckoutSession,
    Customer,
    Invoice,
    Price,
    Product,
    SimError,
    Subscription,
    add_interval,
    missing,
)
from .shapes import BASIL, JSON, Renderer

EVENT_RETENTION = 30 * DAY
DEFAULT_SIGNING_KEY = "whsec_sim"
DEFAULT_PRICE = "price_premium_monthly"
YEARLY_PRICE = "price_premium_yearly"
DEFAULT_PRODUCT = "prod_premium"
# statuses a default ``GET /v1/subscriptions`` leaves out
HIDDEN_BY_DEFAULT = ("canceled", "incomplete_expired")
SUB_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)
LIVE_STATUSES = ("trialing", "active", "past_due", "unpaid", "paused", "incomplete")

F = TypeVar("F", bound=Callable[..., Any])


def _op(fn: F) -> F:
    """Run a public operation under the lock, as one simulated API request."""

    @functools.wraps(fn)
    def wrapper(self: Simulator, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            outer = self._request_id
            if outer is None and not self._advancing:
                self._request_id = self.ids.new("req", 14)
            try:
                return fn(self, *args, **kwargs)
            finally:
                self._request_id = outer

    return wrapper  # type: ignore[return-value]


def _diff(before: JSON, after: JSON) -> JSON:
    """Stripe's ``previous_attributes``: old values of the top-level keys that changed."""
    keys = sorted(set(before) | set(after))
    return {k: before.get(k) for k in keys if before.get(k) != after.get(k)}


class Simulator:
    """An in-memory, Stripe-compatible account driven by a simulated clock."""

    def __init__(
        self,
        *,
        api_version: str = BASIL,
        start: int | None = None,
        api_key: str = "sk_test_sim",
        seed: int | None = None,
        webhook_urls: Iterable[str] = (),
        webhook_secret: str = DEFAULT_SIGNING_KEY,
        delivery: dict[str, Any] | None = None,
        dunning_end: str = "canceled",
        retry_schedule_days: Iterable[float] = (3, 5, 7),
        finalize_delay: int = 3600,
        trial_will_end_days: int = 3,
        checkout_expiry: int = DAY,
        incomplete_expiry: int = 23 * 3600,
        default_catalog: bool = True,
    ) -> None:
        self.lock = threading.RLock()
        self.api_version = api_version
        self.api_key = api_key
        self.clock = SimClock(start)
        self.rng = SeededRandom(seed)
        self.ids = IdFactory(self.rng)
        self.delivery = WebhookDelivery(settings=DeliverySettings(**(delivery or {})), seed=seed)
        self.webhook_secret = webhook_secret
        self._set_urls(list(webhook_urls), webhook_secret)
        self.dunning_end = dunning_end
        self.retry_schedule_days = [float(d) for d in retry_schedule_days]
        self.finalize_delay = int(finalize_delay)
        self.trial_will_end_days = int(trial_will_end_days)
        self.checkout_expiry = int(checkout_expiry)
        self.incomplete_expiry = int(incomplete_expiry)
        self._check_dunning_end(dunning_end)

        self.products: dict[str, Product] = {}
        self.prices: dict[str, Price] = {}
        self.customers: dict[str, Customer] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.invoices: dict[str, Invoice] = {}
        self.sessions: dict[str, CheckoutSession] = {}
        # creation-ordered indexes (the clock never goes back, so also by created)
        self._sub_ids: list[str] = []
        self._sub_pos: dict[str, int] = {}
        self._subs_by_customer: dict[str, list[str]] = {}
        self._inv_ids: list[str] = []
        self._inv_pos: dict[str, int] = {}
        self._invs_by_sub: dict[str, list[str]] = {}
        self._cus_ids: list[str] = []
        self._cus_pos: dict[str, int] = {}
        self.events: list[JSON] = []
        self._event_created: list[int] = []
        self._event_pos: dict[str, int] = {}

        self._heap: list[tuple[int, int, str, str, int]] = []
        self._hseq = itertools.count()
        self._request_id: str | None = None
        self._advancing = False
        self._quiet = False
        self._rate_limit: dict[str, int] = {}
        self._api_requests = 0
        self.render = Renderer(api_version, self._price, self._product, self.customers.get)
        if default_catalog:
            now = self.clock.now()
            self.products[DEFAULT_PRODUCT] = Product(DEFAULT_PRODUCT, "Premium Plan", now)
            self.prices[DEFAULT_PRICE] = Price(
                DEFAULT_PRICE, DEFAULT_PRODUCT, 2999, "usd", "month", 1, now, "Premium monthly"
            )
            self.prices[YEARLY_PRICE] = Price(
                YEARLY_PRICE, DEFAULT_PRODUCT, 29990, "usd", "year", 1, now, "Premium yearly"
            )

    # ------------------------------------------------------------------ lookups
    def now(self) -> int:
        return self.clock.now()

    def _price(self, ident: str) -> Price:
        try:
            return self.prices[ident]
        except KeyError:
            raise missing("price", ident, "price") from None

    def _product(self, ident: str) -> Product:
        try:
            return self.products[ident]
        except KeyError:
            raise missing("product", ident, "product") from None

    def _customer(self, ident: str, param: str = "customer") -> Customer:
        cus = self.customers.get(ident)
        if cus is None:
            raise missing("customer", ident, param)
        return cus

    def _live_customer(self, ident: str) -> Customer:
        cus = self._customer(ident)
        if cus.deleted:
            raise missing("customer", ident)
        return cus

    def _sub(self, ident: str, param: str = "subscription") -> Subscription:
        sub = self.subscriptions.get(ident)
        if sub is None:
            raise missing("subscription", ident, param)
        return sub

    def _inv(self, ident: str, param: str = "invoice") -> Invoice:
        inv = self.invoices.get(ident)
        if inv is None:
            raise missing("invoice", ident, param)
        return inv

    def _session(self, ident: str) -> CheckoutSession:
        cs = self.sessions.get(ident)
        if cs is None:
            raise missing("checkout.session", ident, "session")
        return cs

    # ------------------------------------------------------------ configuration
    @staticmethod
    def _check_dunning_end(value: str) -> None:
        if value not in ("canceled", "unpaid", "past_due"):
            raise SimError("dunning_end must be canceled, unpaid or past_due", param="dunning_end")

    def _set_urls(self, urls: list[str], secret: str) -> None:
        secrets = [s.strip() for s in secret.split(",") if s.strip()]
        self.delivery.set_endpoints([Endpoint(url, secrets) for url in urls])

    @_op
    def configure(
        self,
        *,
        dunning_end: str | None = None,
        retry_schedule_days: Iterable[float] | None = None,
        finalize_delay: int | None = None,
        trial_will_end_days: int | None = None,
        checkout_expiry: int | None = None,
        incomplete_expiry: int | None = None,
    ) -> JSON:
        """Billing settings: how dunning ends and the retry schedule (days after the first failure)."""
        if dunning_end is not None:
            self._check_dunning_end(dunning_end)
            self.dunning_end = dunning_end
        if retry_schedule_days is not None:
            self.retry_schedule_days = [float(d) for d in retry_schedule_days]
        if finalize_delay is not None:
            self.finalize_delay = int(finalize_delay)
        if trial_will_end_days is not None:
            self.trial_will_end_days = int(trial_will_end_days)
        if checkout_expiry is not None:
            self.checkout_expiry = int(checkout_expiry)
        if incomplete_expiry is not None:
            self.incomplete_expiry = int(incomplete_expiry)
        return self.settings()

    def settings(self) -> JSON:
        with self.lock:
            return {
                "api_version": self.api_version,
                "now": self.clock.now(),
                "dunning_end": self.dunning_end,
                "retry_schedule_days": list(self.retry_schedule_days),
                "finalize_delay": self.finalize_delay,
                "trial_will_end_days": self.trial_will_end_days,
                "checkout_expiry": self.checkout_expiry,
                "incomplete_expiry": self.incomplete_expiry,
                "webhook_urls": [ep.url for ep in self.delivery.endpoints],
                "delivery": self.delivery.settings_dict(),
                "rate_limit": dict(self._rate_limit),
            }

    def configure_delivery(
        self,
        *,
        urls: Iterable[str] | None = None,
        secret: str | None = None,
        seed: int | None = None,
        **settings: Any,
    ) -> JSON:
        """Webhook endpoints, secret(s) (comma-separated) and chaos/retry settings.

        Settings: duplicate_rate, resend_rate, drop_rate, reorder_window,
        reorder_hold, delay, max_attempts, retry_initial, retry_factor,
        retry_max, timeout, paused, body_format, concurrency.
        """
        with self.lock:
            if secret is not None:
                self.webhook_secret = secret
            if urls is not None or secret is not None:
                current = [ep.url for ep in self.delivery.endpoints]
                self._set_urls(list(urls) if urls is not None else current, self.webhook_secret)
            if seed is not None:
                self.delivery.reseed(seed)
            try:
                self.delivery.configure(**settings)
            except ValueError as exc:
                raise SimError(str(exc)) from None
            return self.settings()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (wall clock) until every queued webhook was delivered or given up."""
        return self.delivery.flush(timeout)

    def delivery_stats(self) -> JSON:
        return self.delivery.stats()

    def set_rate_limit(self, every: int | None = None, next: int | None = None) -> JSON:
        """Answer 429 to every Nth API request, and/or to the next N; nothing clears it."""
        with self.lock:
            self._rate_limit = {}
            if every:
                self._rate_limit["every"] = int(every)
            if next:
                self._rate_limit["next"] = int(next)
            self._api_requests = 0
            return dict(self._rate_limit)

    def take_rate_limit(self) -> bool:
        """Count one API request; True when it must be answered 429."""
        with self.lock:
            self._api_requests += 1
            left = self._rate_limit.get("next", 0)
            if left > 0:
                self._rate_limit["next"] = left - 1
                if left == 1:
                    del self._rate_limit["next"]
                return True
            every = self._rate_limit.get("every")
            return bool(every) and self._api_requests % every == 0

    def close(self) -> None:
        self.delivery.close()

    # ------------------------------------------------------------------ events
    def _emit(self, type_: str, obj: JSON, previous: JSON | None = None) -> JSON | None:
        if self._quiet:
            return None
        event: JSON = {
            "id": self.ids.new("evt"),
            "object": "event",
            "api_version": self.api_version,
            "created": self.clock.now(),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": len(self.delivery.endpoints),
            "request": {"id": self._request_id, "idempotency_key": None},
            "type": type_,
        }
        if previous is not None:
            event["data"]["previous_attributes"] = previous
        self._store_event(event)
        self.delivery.submit(event)
        if self.delivery.roll(self.delivery.settings.resend_rate):
            again = copy.deepcopy(event)
            again["id"] = self.ids.new("evt")
            self._store_event(again)
            self.delivery.submit(again, resent=True)
        return event

    def _store_event(self, event: JSON) -> None:
        self._event_pos[event["id"]] = len(self.events)
        self.events.append(event)
        self._event_created.append(event["created"])

    def _sub_changed(self, before: JSON, sub: Subscription, type_: str = "customer.subscription.updated") -> None:
        if self._quiet:
            return
        after = self.render.subscription(sub)
        self._emit(type_, after, _diff(before, after) if type_.endswith(".updated") else None)

    def _inv_event(self, type_: str, inv: Invoice, before: JSON | None = None) -> None:
        if self._quiet:
            return
        after = self.render.invoice(inv)
        self._emit(type_, after, _diff(before, after) if before is not None else None)

    # --------------------------------------------------------------- scheduling
    def _schedule(self, due: int, kind: str, ident: str, token: int) -> None:
        heapq.heappush(self._heap, (int(due), next(self._hseq), kind, ident, token))

    def advance(self, seconds: int) -> JSON:
        """Move the clock forward, processing everything that falls due on the way."""
        if seconds < 0:
            raise SimError("seconds must be >= 0", param="seconds")
        with self.lock:
            return self.advance_to(self.clock.now() + int(seconds))

    def advance_to(self, ts: int) -> JSON:
        """Move the clock to ``ts``; actions due on the way run in time order."""
        with self.lock:
            ts = int(ts)
            if ts < self.clock.now():
                raise SimError("the clock cannot go backwards", param="ts")
            before = len(self.events)
            self._advancing = True
            try:
                while self._heap and self._heap[0][0] <= ts:
                    due, _, kind, ident, token = heapq.heappop(self._heap)
                    if due > self.clock.now():
                        self.clock.set(due)
                    self._quiet = self._is_quiet(kind, ident)
                    try:
                        getattr(self, f"_on_{kind}")(ident, token)
                    finally:
                        self._quiet = False
                self.clock.set(ts)
            finally:
                self._advancing = False
            return {"now": ts, "events": len(self.events) - before}

    def _is_quiet(self, kind: str, ident: str) -> bool:
        if kind in ("finalize", "retry"):
            sub = self.subscriptions.get(self.invoices[ident].subscription or "")
            return sub is not None and sub.quiet
        sub = self.subscriptions.get(ident)
        return sub is not None and sub.quiet

    def next_due(self) -> int | None:
        """When the next scheduled action falls due (stale ones included)."""
        with self.lock:
            return self._heap[0][0] if self._heap else None

    # ---------------------------------------------------------------- catalogue
    @_op
    def create_price(
        self,
        *,
        unit_amount: int,
        interval: str = "month",
        interval_count: int = 1,
        currency: str = "usd",
        id: str | None = None,
        product: str | None = None,
        product_name: str | None = None,
        nickname: str | None = None,
    ) -> JSON:
        """A recurring price (``day``/``week`` intervals make fast demo cycles)."""
        if interval not in ("day", "week", "month", "year"):
            raise SimError("Invalid interval", param="recurring[interval]")
        now = self.clock.now()
        if product is None:
            product = DEFAULT_PRODUCT if product_name is None else self.ids.new("prod", 14)
        if product not in self.products:
            self.products[product] = Product(product, product_name or "Premium Plan", now)
        pid = id or self.ids.new("price")
        self.prices[pid] = Price(
            pid, product, int(unit_amount), currency.lower(), interval, int(interval_count), now, nickname
        )
        return self.render.price(self.prices[pid])

    # ---------------------------------------------------------------- customers
    def _new_customer(
        self, email: str | None, name: str | None, metadata: dict[str, str] | None, id: str | None = None
    ) -> Customer:
        cid = id or self.ids.new("cus", 14)
        if cid in self.customers:
            raise SimError(f"Customer {cid} already exists", code="resource_already_exists", param="id")
        prefix = self.rng.randbytes(4).hex().upper()
        cus = Customer(cid, self.clock.now(), email, name, dict(metadata or {}), prefix)
        self.customers[cid] = cus
        self._cus_pos[cid] = len(self._cus_ids)
        self._cus_ids.append(cid)
        return cus

    @_op
    def create_customer(
        self,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        id: str | None = None,
    ) -> JSON:
        cus = self._new_customer(email, name, metadata, id)
        out = self.render.customer(cus)
        self._emit("customer.created", out)
        return self.render.customer(cus)

    @_op
    def update_customer(
        self,
        customer: str,
        *,
        email: str | None = None,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JSON:
        cus = self._live_customer(customer)
        before = self.render.customer(cus)
        if email is not None:
            cus.email = email
        if name is not None:
            cus.name = name
        if description is not None:
            cus.description = description
        if metadata is not None:
            for key, value in metadata.items():
                if value in (None, ""):
                    cus.metadata.pop(key, None)
                else:
                    cus.metadata[key] = str(value)
        after = self.render.customer(cus)
        self._emit("customer.updated", after, _diff(before, after))
        return self.render.customer(cus)

    @_op
    def delete_customer(self, customer: str) -> JSON:
        """Cancel the customer's live subscriptions at once, then ``customer.deleted``."""
        cus = self._live_customer(customer)
        for sid in self._subs_by_customer.get(cus.id, []):
            sub = self.subscriptions[sid]
            if sub.status in LIVE_STATUSES:
                self._end_now(sub, "cancellation_requested")
        snapshot = self.render.customer(cus)
        cus.deleted = True
        self._emit("customer.deleted", snapshot)
        return self.render.customer(cus)

    @_op
    def fail_next_payments(self, customer: str, n: int = 1, until_new_card: bool = False) -> JSON:
        """The customer's next ``n`` payment attempts fail (or all, until a new card)."""
        cus = self._live_customer(customer)
        cus.fail_remaining = int(n) if not until_new_card else cus.fail_remaining
        cus.fail_until_new_card = bool(until_new_card)
        return {"customer": cus.id, "fail_remaining": cus.fail_remaining, "until_new_card": cus.fail_until_new_card}

    @_op
    def attach_new_card(self, customer: str) -> JSON:
        """A new default card: clears the failure flags (``customer.updated``)."""
        cus = self._live_customer(customer)
        self._attach_card(cus)
        return self.render.customer(cus)

    def _attach_card(self, cus: Customer) -> None:
        before = self.render.customer(cus)
        cus.fail_remaining = 0
        cus.fail_until_new_card = False
        cus.default_payment_method = self.ids.new("pm")
        after = self.render.customer(cus)
        self._emit("customer.updated", after, _diff(before, after))

    def _payment_fails(self, cus: Customer, peek: bool = False) -> bool:
        if cus.fail_until_new_card:
            return True
        if cus.fail_remaining > 0:
            if not peek:
                cus.fail_remaining -= 1
            return True
        return False

    # ------------------------------------------------------------ subscriptions
    def _index_sub(self, sub: Subscription) -> None:
        self.subscriptions[sub.id] = sub
        self._sub_pos[sub.id] = len(self._sub_ids)
        self._sub_ids.append(sub.id)
        self._subs_by_customer.setdefault(sub.customer, []).append(sub.id)

    def _new_invoice(
        self,
        sub: Subscription,
        billing_reason: str,
        *,
        period_start: int,
        period_end: int,
        line_start: int,
        line_end: int,
        amount: int | None = None,
    ) -> Invoice:
        price = self._price(sub.price)
        inv = Invoice(
            id=self.ids.new("in"),
            customer=sub.customer,
            subscription=sub.id,
            subscription_item=sub.item_id,
            price=price.id,
            status="draft",
            amount_due=price.unit_amount * sub.quantity if amount is None else amount,
            currency=price.currency,
            created=self.clock.now(),
            billing_reason=billing_reason,
            period_start=period_start,
            period_end=period_end,
            line_id=self.ids.new("il"),
            line_start=line_start,
            line_end=line_end,
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
        self._inv_event("invoice.finalized", inv)

    @_op
    def create_subscription(
        self,
        customer: str,
        *,
        price: str = DEFAULT_PRICE,
        trial_days: int | None = None,
        trial_end: int | None = None,
        payment_behavior: str = "allow_incomplete",
        metadata: dict[str, str] | None = None,
        quantity: int = 1,
    ) -> JSON:
        """Subscribe a customer, as ``POST /v1/subscriptions`` does.

        Without a trial the first invoice (``subscription_create``) is created,
        finalized and charged at once; the subscription is created
        ``incomplete`` and becomes ``active`` when that payment succeeds.
        ``payment_behavior``: ``allow_incomplete`` (a failed first payment
        leaves it ``incomplete``, ``incomplete_expired`` after 23 h),
        ``default_incomplete`` (no attempt: pay it with ``pay_open_invoice``),
        ``error_if_incomplete`` (a failing card is a 402 and nothing is created).
        """
        cus = self._live_customer(customer)
        self._price(price)
        if payment_behavior not in ("allow_incomplete", "default_incomplete", "error_if_incomplete"):
            raise SimError("Invalid payment_behavior", param="payment_behavior")
        no_trial = not trial_days and trial_end is None
        if payment_behavior == "error_if_incomplete" and no_trial and self._payment_fails(cus, peek=True):
            raise SimError("Your card was declined.", status=402, type="card_error", code="card_declined")
        sub = self._start_subscription(
            cus,
            price,
            trial_days=trial_days,
            trial_end=trial_end,
            payment_behavior=payment_behavior,
            metadata=metadata,
            quantity=quantity,
        )
        return self.render.subscription(sub)

    def _start_subscription(
        self,
        cus: Customer,
        price_id: str,
        *,
        trial_days: int | None,
        trial_end: int | None,
        payment_behavior: str,
        metadata: dict[str, str] | None,
        quantity: int = 1,
        force_success: bool = False,
    ) -> Subscription:
        price = self._price(price_id)
        now = self.clock.now()
        if trial_days:
            trial_end = now + int(trial_days) * DAY
        trialing = trial_end is not None
        if trialing:
            assert trial_end is not None
            if trial_end <= now:
                raise SimError("trial_end must be in the future", param="trial_end")
            period_end = trial_end
        else:
            period_end = add_interval(now, price.interval, price.interval_count, 1)
        sub = Subscription(
            id=self.ids.new("sub"),
            customer=cus.id,
            price=price.id,
            item_id=self.ids.new("si", 14),
            status="trialing" if trialing else "incomplete",
            created=now,
            start_date=now,
            billing_cycle_anchor=period_end if trialing else now,
            current_period_start=now,
            current_period_end=period_end,
            trial_start=now if trialing else None,
            trial_end=trial_end,
            metadata=dict(metadata or {}),
            quantity=int(quantity),
        )
        self._index_sub(sub)
        amount = 0 if trialing else None
        inv = self._new_invoice(
            sub,
            "subscription_create",
            period_start=now,
            period_end=now,
            line_start=now,
            line_end=period_end,
            amount=amount,
        )
        self._emit("customer.subscription.created", self.render.subscription(sub))
        self._inv_event("invoice.created", inv)
        if trialing:
            self._finalize(inv)
            self._charge(inv, force_success=True)
            assert trial_end is not None
            warn_at = max(now, trial_end - self.trial_will_end_days * DAY)
            self._schedule(warn_at, "trial_will_end", sub.id, sub.token)
            self._schedule(trial_end, "trial_end", sub.id, sub.token)
            return sub
        self._finalize(inv)
        if payment_behavior != "default_incomplete":
            self._charge(inv, force_success=force_success)
        if sub.status == "incomplete":
            self._schedule(now + self.incomplete_expiry, "incomplete_expire", sub.id, sub.token)
        self._schedule(period_end, "renew", sub.id, sub.token)
        return sub

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
                inv.payment_intent = self.ids.new("pi")
                inv.charge = self.ids.new("ch")
            self._inv_event("invoice.paid", inv)
            self._inv_event("invoice.payment_succeeded", inv)
            if sub is not None:
                self._after_paid(sub)
            return True
        # failure
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

    @_op
    def cancel_subscription(
        self,
        subscription: str,
        *,
        at_period_end: bool = False,
        comment: str | None = None,
        feedback: str | None = None,
    ) -> JSON:
        """Cancel now (``customer.subscription.deleted``) or at period end (``updated`` now, ``deleted`` then)."""
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

    @_op
    def uncancel_subscription(self, subscription: str) -> JSON:
        """Undo a cancel-at-period-end (``cancel_at_period_end=false``)."""
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

    @_op
    def update_subscription_metadata(self, subscription: str, metadata: dict[str, str]) -> JSON:
        sub = self._sub(subscription)
        before = self.render.subscription(sub)
        for key, value in metadata.items():
            if value in (None, ""):
                sub.metadata.pop(key, None)
            else:
                sub.metadata[key] = str(value)
        self._sub_changed(before, sub)
        return self.render.subscription(sub)

    @_op
    def pause_subscription(self, subscription: str) -> JSON:
        """Status ``paused``: ``customer.subscription.paused`` then ``updated``; no renewals."""
        sub = self._sub(subscription)
        if sub.status not in ("active", "trialing", "past_due"):
            raise SimError(f"Subscription {sub.id} cannot be paused from {sub.status}", param="subscription")
        before = self.render.subscription(sub)
        sub.status = "paused"
        sub.token += 1
        after = self.render.subscription(sub)
        self._emit("customer.subscription.paused", after)
        self._emit("customer.subscription.updated", self.render.subscription(sub), _diff(before, after))
        return self.render.subscription(sub)

    @_op
    def resume_subscription(self, subscription: str) -> JSON:
        """Back to ``active`` with a new period from now (``billing_cycle_anchor=now``), invoiced at once."""
        sub = self._sub(subscription)
        if sub.status != "paused":
            raise SimError(f"Subscription {sub.id} is not paused", param="subscription")
        price = self._price(sub.price)
        now = self.clock.now()
        before = self.render.subscription(sub)
        sub.status = "active"
        sub.billing_cycle_anchor = now
        sub.cycle = 0
        sub.current_period_start = now
        sub.current_period_end = add_interval(now, price.interval, price.interval_count, 1)
        sub.token += 1
        inv = self._new_invoice(
            sub,
            "subscription_cycle",
            period_start=now,
            period_end=now,
            line_start=now,
            line_end=sub.current_period_end,
        )
        after = self.render.subscription(sub)
        self._emit("customer.subscription.resumed", after)
        self._emit("customer.subscription.updated", self.render.subscription(sub), _diff(before, after))
        self._inv_event("invoice.created", inv)
        self._finalize(inv)
        self._charge(inv)
        self._schedule(sub.current_period_end, "renew", sub.id, sub.token)
        return self.render.subscription(sub)

    @_op
    def pay_open_invoice(
        self, subscription: str | None = None, invoice: str | None = None, new_card: bool = True
    ) -> JSON:
        """Pay an open (or uncollectible) invoice now, by default with a new card.

        Without ``invoice``, the subscription's oldest unpaid invoice. A new card
        clears the customer's failure flags (``customer.updated``). The payment
        succeeds (``invoice.paid`` + ``invoice.payment_succeeded``); a
        ``past_due``/``unpaid``/``incomplete`` subscription with nothing else
        unpaid becomes ``active``.
        """
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

    # ------------------------------------------------------------ timed actions
    def _on_renew(self, ident: str, token: int) -> None:
        sub = self.subscriptions[ident]
        if token != sub.token or sub.status not in ("active", "past_due", "unpaid"):
            return
        t = sub.current_period_end
        if sub.cancel_at is not None and sub.cancel_at <= t:
            self._end_now(sub, sub.cancellation_reason or "cancellation_requested")
            return
        price = self._price(sub.price)
        before = self.render.subscription(sub)
        old_start = sub.current_period_start
        sub.cycle += 1
        sub.current_period_start = t
        sub.current_period_end = add_interval(
            sub.billing_cycle_anchor, price.interval, price.interval_count, sub.cycle + 1
        )
        inv = self._new_invoice(
            sub,
            "subscription_cycle",
            period_start=old_start,
            period_end=t,
            line_start=t,
            line_end=sub.current_period_end,
        )
        self._sub_changed(before, sub)
        self._inv_event("invoice.created", inv)
        self._schedule(t + self.finalize_delay, "finalize", inv.id, inv.token)
        self._schedule(sub.current_period_end, "renew", sub.id, sub.token)

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
        price = self._price(sub.price)
        before = self.render.subscription(sub)
        old_start = sub.current_period_start
        sub.status = "active"
        sub.billing_cycle_anchor = t
        sub.cycle = 0
        sub.current_period_start = t
        sub.current_period_end = add_interval(t, price.interval, price.interval_count, 1)
        inv = self._new_invoice(
            sub,
            "subscription_cycle",
            period_start=old_start,
            period_end=t,
            line_start=t,
            line_end=sub.current_period_end,
        )
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

    def _on_checkout_expire(self, ident: str, _token: int) -> None:
        cs = self.sessions[ident]
        if cs.status == "open":
            self._expire_session(cs)

    # ----------------------------------------------------------------- checkout
    @_op
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
    ) -> JSON:
        """An open session (no event, as Stripe). It expires by itself after ``checkout_expiry``."""
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
            id="cs_test_" + self.ids.new("x", 58)[2:],
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

    @_op
    def complete_checkout_session(self, session: str, async_payment: bool = False) -> JSON:
        """The customer completes the session.

        ``payment`` mode: ``checkout.session.completed`` with ``payment_status``
        ``paid`` (or ``unpaid`` when ``async_payment``, then resolve it with
        :meth:`checkout_async_payment`). ``subscription`` mode: the customer (if
        new), the subscription and its first invoice events come first.
        """
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
            cs.payment_intent = self.ids.new("pi")
            cs.payment_status = "unpaid" if async_payment else "paid"
        else:
            assert cs.price is not None
            sub = self._start_subscription(
                cus,
                cs.price,
                trial_days=cs.trial_days,
                trial_end=None,
                payment_behavior="default_incomplete" if async_payment else "allow_incomplete",
                metadata=cs.metadata,
                quantity=cs.quantity,
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

    @_op
    def checkout_async_payment(self, session: str, succeeded: bool = True) -> JSON:
        """Resolve a delayed payment: ``checkout.session.async_payment_succeeded`` / ``_failed``."""
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
        if succeeded:
            cs.payment_status = "paid"
            self._emit("checkout.session.async_payment_succeeded", self.render.checkout_session(cs))
        else:
            self._emit("checkout.session.async_payment_failed", self.render.checkout_session(cs))
        return self.render.checkout_session(cs)

    @_op
    def expire_checkout_session(self, session: str) -> JSON:
        cs = self._session(session)
        if cs.status != "open":
            raise SimError(f"Checkout session {cs.id} is {cs.status}", param="session")
        self._expire_session(cs)
        return self.render.checkout_session(cs)

    def _expire_session(self, cs: CheckoutSession) -> None:
        cs.status = "expired"
        self._emit("checkout.session.expired", self.render.checkout_session(cs))

    # -------------------------------------------------------------------- bulk
    @_op
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
    ) -> JSON:
        """Create ``n`` customers with one subscription each, fast.

        Without events by default; such a population also renews (periods,
        invoices, payments) without events unless ``quiet=False``, so that a
        large one costs little when the clock moves. ``spread_seconds`` backdates each
        subscription's billing anchor by a random amount (so renewals spread
        out); ``canceled_every=k`` makes every k-th one ``canceled``.
        """
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
                    price,
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
            sub = Subscription(
                id=self.ids.new("sub"),
                customer=cus.id,
                price=p.id,
                item_id=self.ids.new("si", 14),
                status=st,
                created=now,
                start_date=anchor,
                billing_cycle_anchor=anchor,
                current_period_start=start,
                current_period_end=end,
                cycle=cycle,
                quiet=(not emit_events) if quiet is None else quiet,
            )
            if st == "canceled":
                sub.canceled_at = sub.ended_at = now
                sub.cancellation_reason = "cancellation_requested"
            self._index_sub(sub)
            if with_invoices:
                inv = self._new_invoice(
                    sub, "subscription_create", period_start=anchor, period_end=anchor, line_start=start, line_end=end
                )
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

    # ---------------------------------------------------------------- reading
    def get_subscription(self, ident: str) -> JSON:
        with self.lock:
            return self.render.subscription(self._sub(ident, "id"))

    def get_invoice(self, ident: str) -> JSON:
        with self.lock:
            return self.render.invoice(self._inv(ident, "id"))

    def get_customer(self, ident: str) -> JSON:
        with self.lock:
            return self.render.customer(self._customer(ident, "id"))

    def get_checkout_session(self, ident: str) -> JSON:
        with self.lock:
            cs = self.sessions.get(ident)
            if cs is None:
                raise missing("checkout.session", ident, "id")
            return self.render.checkout_session(cs)

    def get_price(self, ident: str) -> JSON:
        with self.lock:
            return self.render.price(self._price(ident))

    def get_event(self, ident: str) -> JSON:
        with self.lock:
            pos = self._event_pos.get(ident)
            if pos is None or self.events[pos]["created"] < self.clock.now() - EVENT_RETENTION:
                raise missing("event", ident, "id")
            return self.events[pos]

    @staticmethod
    def _check_limit(limit: int | None) -> int:
        if limit is None:
            return 10
        if not 1 <= int(limit) <= 100:
            raise SimError(
                "Invalid integer: limit must be between 1 and 100", code="parameter_invalid_integer", param="limit"
            )
        return int(limit)

    def list_subscriptions(
        self,
        *,
        status: str | None = None,
        customer: str | None = None,
        price: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        created: dict[str, int] | None = None,
    ) -> JSON:
        """``GET /v1/subscriptions``: newest first, ties in creation order."""
        n = self._check_limit(limit)
        if status is not None and status not in (*SUB_STATUSES, "all", "ended"):
            allowed = ", ".join((*SUB_STATUSES, "all", "ended"))
            raise SimError(f"Invalid status: must be one of {allowed}", param="status")
        with self.lock:
            subs = self.subscriptions

            def match(sid: str) -> bool:
                st = subs[sid].status
                if status is None:
                    ok = st not in HIDDEN_BY_DEFAULT
                elif status == "all":
                    ok = True
                elif status == "ended":
                    ok = st in HIDDEN_BY_DEFAULT
                else:
                    ok = st == status
                return ok and (price is None or subs[sid].price == price)

            if customer is not None:
                ids = self._subs_by_customer.get(customer, [])
                local = {sid: i for i, sid in enumerate(ids)}
                pos = self._positioner(local, "subscription")
            else:
                ids = self._sub_ids
                pos = self._positioner(self._sub_pos, "subscription")
            lo, hi = self._created_bounds(ids, created, lambda sid: subs[sid].created)
            page, more = paginate(
                ids, pos, match, n, starting_after=starting_after, ending_before=ending_before, lo=lo, hi=hi
            )
            return {
                "object": "list",
                "data": [self.render.subscription(subs[sid]) for sid in page],
                "has_more": more,
                "url": "/v1/subscriptions",
            }

    def list_invoices(
        self,
        *,
        subscription: str | None = None,
        customer: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> JSON:
        n = self._check_limit(limit)
        with self.lock:
            invs = self.invoices
            if subscription is not None:
                ids = self._invs_by_sub.get(subscription, [])
                pos = self._positioner({iid: i for i, iid in enumerate(ids)}, "invoice")
            else:
                ids = self._inv_ids
                pos = self._positioner(self._inv_pos, "invoice")

            def match(iid: str) -> bool:
                inv = invs[iid]
                return (customer is None or inv.customer == customer) and (status is None or inv.status == status)

            page, more = paginate(ids, pos, match, n, starting_after=starting_after, ending_before=ending_before)
            return {
                "object": "list",
                "data": [self.render.invoice(invs[i]) for i in page],
                "has_more": more,
                "url": "/v1/invoices",
            }

    def list_customers(
        self,
        *,
        email: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> JSON:
        n = self._check_limit(limit)
        with self.lock:
            cs = self.customers

            def match(cid: str) -> bool:
                return not cs[cid].deleted and (email is None or cs[cid].email == email)

            pos = self._positioner(self._cus_pos, "customer")
            page, more = paginate(
                self._cus_ids, pos, match, n, starting_after=starting_after, ending_before=ending_before
            )
            return {
                "object": "list",
                "data": [self.render.customer(cs[c]) for c in page],
                "has_more": more,
                "url": "/v1/customers",
            }

    def list_events(
        self,
        *,
        type: str | None = None,
        types: list[str] | None = None,
        created: dict[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> JSON:
        """``GET /v1/events``: the last 30 days, newest first; ``type`` may use ``*``."""
        n = self._check_limit(limit)
        if type is not None and types:
            raise SimError("You may only specify one of these parameters: type, types.", param="types")
        patterns = [type] if type is not None else list(types or [])
        with self.lock:
            bounds = dict(created or {})
            floor = self.clock.now() - EVENT_RETENTION
            bounds["gte"] = max(bounds.get("gte", floor), floor)
            lo, hi = self._bounds(self._event_created, bounds)
            ids_events = self.events

            def match(pos_or_id: str) -> bool:
                if not patterns:
                    return True
                t = ids_events[self._event_pos[pos_or_id]]["type"]
                return any(fnmatch.fnmatchcase(t, p) for p in patterns)

            ids = _EventIds(self.events)
            pos = self._positioner(self._event_pos, "event")
            page, more = paginate(
                ids, pos, match, n, starting_after=starting_after, ending_before=ending_before, lo=lo, hi=hi
            )
            return {
                "object": "list",
                "data": [self.events[self._event_pos[e]] for e in page],
                "has_more": more,
                "url": "/v1/events",
            }

    @staticmethod
    def _positioner(index: dict[str, int], kind: str) -> Callable[[str], int]:
        def position(ident: str) -> int:
            pos = index.get(ident)
            if pos is None:
                raise SimError(
                    f"No such {kind}: '{ident}'", status=400, code="resource_missing", param="starting_after"
                )
            return pos

        return position

    @staticmethod
    def _bounds(created: Sequence[int], bounds: dict[str, int]) -> tuple[int, int]:
        lo, hi = 0, len(created)
        for op, value in bounds.items():
            v = int(value)
            if op == "gte":
                lo = max(lo, bisect.bisect_left(created, v))
            elif op == "gt":
                lo = max(lo, bisect.bisect_right(created, v))
            elif op == "lte":
                hi = min(hi, bisect.bisect_right(created, v))
            elif op == "lt":
                hi = min(hi, bisect.bisect_left(created, v))
            elif op == "eq":
                lo = max(lo, bisect.bisect_left(created, v))
                hi = min(hi, bisect.bisect_right(created, v))
            else:
                raise SimError(f"Invalid created filter: {op}", param="created")
        return lo, max(lo, hi)

    def _created_bounds(
        self, ids: list[str], created: dict[str, int] | None, key: Callable[[str], int]
    ) -> tuple[int, int]:
        if not created:
            return 0, len(ids)
        return self._bounds(_KeyView(ids, key), created)

    # ------------------------------------------------------------------ truth
    def truth(self, include: Iterable[str] = ("subscriptions", "invoices", "customers", "checkout_sessions")) -> JSON:
        """Every object's current state as the API renders it (ground truth for tests)."""
        want = set(include)
        with self.lock:
            out: JSON = {"now": self.clock.now(), "api_version": self.api_version}
            if "subscriptions" in want:
                out["subscriptions"] = [self.render.subscription(self.subscriptions[s]) for s in self._sub_ids]
            if "invoices" in want:
                out["invoices"] = [self.render.invoice(self.invoices[i]) for i in self._inv_ids]
            if "customers" in want:
                out["customers"] = [self.render.customer(self.customers[c]) for c in self._cus_ids]
            if "checkout_sessions" in want:
                out["checkout_sessions"] = [self.render.checkout_session(cs) for cs in self.sessions.values()]
            return out

    def all_events(self, type: str | None = None) -> list[JSON]:
        """Every event ever emitted, oldest first (no 30-day window)."""
        with self.lock:
            return [e for e in self.events if type is None or fnmatch.fnmatchcase(e["type"], type)]


class _EventIds(Sequence[str]):
    """A read-only sequence view of event ids."""

    def __init__(self, events: list[JSON]) -> None:
        self._events = events

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, i: int) -> str:
        return self._events[i]["id"]


class _KeyView(Sequence[int]):
    """A sequence of keys (for bisect) over an id list."""

    def __init__(self, ids: list[str], key: Callable[[str], int]) -> None:
        self._ids = ids
        self._key = key

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> int:
        return self._key(self._ids[i])
