"""The simulator's core: state, the lock, events and the timed actions run as the clock moves.

Everything happens under one re-entrant lock. The objects live in ledgers, one
per account (the platform's and each connected account's, ``ledger.py``); an
operation works on the ledger its ``account`` argument names (the platform's
when absent), and a timed action on the ledger that scheduled it. Operations named like API calls
(``create_subscription``, ``cancel_subscription``...) emit their events at the
current simulated time; :meth:`SimCore.advance` runs everything that falls due
(renewals, invoice finalization and payment, dunning retries, trial ends,
checkout expiry) in time order, each at its own simulated time. A timed action
of kind ``k`` runs the method ``_on_k`` that a resource mixin defines.
"""

from __future__ import annotations

import copy
import functools
import heapq
import itertools
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .clock import SimClock
from .delivery import DeliverySettings, Endpoint, WebhookDelivery
from .ids import IdFactory, SeededRandom
from .ledger import (
    ADDON_MONTHLY_PRICE,
    ADDON_PRICE,
    ADDON_PRODUCT,
    DEFAULT_PRICE,
    DEFAULT_PRODUCT,
    YEARLY_PRICE,
    Ledger,
    LedgerViews,
    new_ledger,
    no_access,
)
from .model import (
    DAY,
    CheckoutSession,
    Customer,
    Invoice,
    InvoiceLine,
    Price,
    Product,
    SimError,
    SubItem,
    Subscription,
    missing,
)
from .shapes import BASIL, JSON, Renderer

__all__ = [
    "ADDON_MONTHLY_PRICE",
    "ADDON_PRICE",
    "ADDON_PRODUCT",
    "DEFAULT_PRICE",
    "DEFAULT_PRODUCT",
    "DEFAULT_SIGNING_KEY",
    "YEARLY_PRICE",
    "SimCore",
    "no_access",
    "operation",
    "previous_attributes",
]

DEFAULT_SIGNING_KEY = "whsec_sim"
LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")

F = TypeVar("F", bound=Callable[..., Any])


def operation(fn: F) -> F:
    """Run a public operation under the lock, as one simulated API request.

    The operation selects its account's ledger itself (``self._use(account)``);
    the ledger in use before it is back afterwards.
    """

    @functools.wraps(fn)
    def wrapper(self: SimCore, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            outer = self._request_id
            ledger = self._ledger
            if outer is None and not self._advancing:
                self._request_id = self.ids.new("req", 14)
            try:
                return fn(self, *args, **kwargs)
            finally:
                self._request_id = outer
                self._ledger = ledger

    return wrapper  # type: ignore[return-value]


def previous_attributes(before: JSON, after: JSON) -> JSON:
    """Stripe's ``previous_attributes``: old values of the top-level keys that changed."""
    keys = sorted(set(before) | set(after))
    return {k: before.get(k) for k in keys if before.get(k) != after.get(k)}


class SimCore(LedgerViews):
    """The ledgers of records, their event logs and the heap of timed actions."""

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
        livemode: bool | None = None,
        payment_events: bool = True,
    ) -> None:
        self.lock = threading.RLock()
        self.api_version = api_version
        self.api_key = api_key
        # one mode per instance, as a Stripe key belongs to one: its prefix says which
        self.livemode = api_key.startswith(LIVE_KEY_PREFIXES) if livemode is None else bool(livemode)
        self.clock = SimClock(start)
        self.started = self.clock.now()
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
        # the payment intents' and charges' own events in invoice and session lifecycles (charges.py)
        self.payment_events = bool(payment_events)
        self._check_dunning_end(dunning_end)

        self.default_catalog = default_catalog
        self.platform = new_ledger(None, self.clock.now(), default_catalog)
        self._ledger: Ledger = self.platform
        self.connected: dict[str, Ledger] = {}  # by account id, in creation order
        # the platform's own id comes from a generator of its own, so that every
        # other id a seed gives stays what it was before accounts existed
        self.platform_id = IdFactory(SeededRandom(None if seed is None else seed + 1)).new("acct", 16)
        self._all_events: list[JSON] = []  # every account's, in emission order

        self._heap: list[tuple[int, int, str, str, int, Ledger]] = []
        self._hseq = itertools.count()
        self._request_id: str | None = None
        # the Idempotency-Key of the HTTP request being served, per serving thread (idempotency.py)
        self._http_request = threading.local()
        self._advancing = False
        self._quiet = False
        self._rate_limit: dict[str, int] = {}
        self._api_requests = 0
        self._latency: dict[tuple[str, str], tuple[float, int]] = {}  # (method, path) -> (seconds, requests left)
        self.render = Renderer(
            api_version,
            self._price,
            self._product,
            self._customer_or_none,
            livemode=self.livemode,
            account_name=self._account_name,
        )

    if TYPE_CHECKING:
        # The resource mixins call one another through these; each is defined in
        # the module named beside it and declared here for the type checker only.
        def _new_customer(  # customers.py
            self, email: str | None, name: str | None, metadata: dict[str, str] | None, id: str | None = None
        ) -> Customer: ...
        def _attach_card(self, cus: Customer) -> None: ...  # customers.py
        def _payment_fails(self, cus: Customer, peek: bool = False) -> bool: ...  # customers.py
        def _index_sub(self, sub: Subscription) -> None: ...  # subscriptions.py
        def _start_subscription(  # subscriptions.py
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
        ) -> Subscription: ...
        def _item_specs(self, items: list[dict[str, Any]]) -> list[tuple[str, int]]: ...  # subscription_items.py
        def _billing_mode(self, value: str | dict[str, Any] | None) -> str: ...  # subscription_items.py
        def _check_intervals(self, mode: str, price_ids: list[str]) -> None: ...  # subscription_items.py
        def _restart_periods(self, sub: Subscription, start: int) -> None: ...  # subscription_items.py
        def _index_item(self, sub: Subscription, it: SubItem) -> None: ...  # subscription_items.py
        def _end_now(  # subscriptions.py
            self, sub: Subscription, reason: str, comment: str | None = None, feedback: str | None = None
        ) -> None: ...
        def _new_invoice(  # invoices.py
            self,
            sub: Subscription,
            billing_reason: str,
            *,
            period_start: int,
            period_end: int,
            items: list[SubItem] | None = None,
            free: bool = False,
        ) -> Invoice: ...
        def _finalize(self, inv: Invoice) -> None: ...  # invoices.py
        def _charge(self, inv: Invoice, *, force_success: bool = False) -> bool: ...  # invoices.py
        def _open_payment(self, inv: Invoice) -> None: ...  # charges.py
        def _settle_payment(self, inv: Invoice, succeeded: bool) -> None: ...  # charges.py
        def _checkout_payment(self, cs: CheckoutSession, async_payment: bool) -> None: ...  # charges.py
        def _checkout_payment_settled(self, cs: CheckoutSession, succeeded: bool) -> None: ...  # charges.py
        def _pending_item_lines(  # invoice_items.py
            self, sub: Subscription, invoice: str, currency: str
        ) -> list[InvoiceLine]: ...

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

    def _customer_or_none(self, ident: str) -> Customer | None:
        return self.customers.get(ident)  # of the ledger in use when called

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

    # ------------------------------------------------- settings used at start
    @staticmethod
    def _check_dunning_end(value: str) -> None:
        if value not in ("canceled", "unpaid", "past_due"):
            raise SimError("dunning_end must be canceled, unpaid or past_due", param="dunning_end")

    def _set_urls(self, urls: list[str], secret: str) -> None:
        secrets = [s.strip() for s in secret.split(",") if s.strip()]
        self.delivery.set_endpoints([Endpoint(url, secrets) for url in urls])

    def _set_thin_urls(self, urls: list[str], secret: str) -> None:
        """The endpoints that take thin payloads (``v2.core.event``), signed with the same secret(s)."""
        secrets = [s.strip() for s in secret.split(",") if s.strip()]
        self.delivery.set_thin_endpoints([Endpoint(url, secrets) for url in urls])

    # ------------------------------------------------------------------ events
    def _emit(self, type_: str, obj: JSON, previous: JSON | None = None) -> JSON | None:
        if self._quiet:
            return None
        acct = self._ledger.account
        # a platform no longer connected to an account hears nothing of it
        delivered = acct is None or not acct.deauthorized
        event: JSON = {"id": self.ids.new("evt"), "object": "event"}
        if acct is not None:
            event["account"] = acct.id  # as Connect endpoints receive a connected account's events
        event.update(
            {
                "api_version": self.api_version,
                "created": self.clock.now(),
                "data": {"object": obj},
                "livemode": self.livemode,
                "pending_webhooks": len(self.delivery.endpoints) if delivered else 0,
                "request": {"id": self._request_id, "idempotency_key": self._idempotency_key()},
                "type": type_,
            }
        )
        if previous is not None:
            event["data"]["previous_attributes"] = previous
        self._store_event(event)
        if not delivered:
            return event
        self.delivery.submit(event)
        if self.delivery.roll(self.delivery.settings.resend_rate):
            again = copy.deepcopy(event)
            again["id"] = self.ids.new("evt")
            self._store_event(again)
            self.delivery.submit(again, resent=True)
        return event

    def _idempotency_key(self) -> str | None:
        """The key of the API request whose operation emits now; None for the clock's own actions."""
        if self._request_id is None or self._advancing:
            return None
        key: str | None = getattr(self._http_request, "idempotency_key", None)
        return key

    def _store_event(self, event: JSON) -> None:
        self._event_pos[event["id"]] = len(self.events)
        self.events.append(event)
        self._event_created.append(event["created"])
        self._all_events.append(event)

    def _sub_changed(self, before: JSON, sub: Subscription, type_: str = "customer.subscription.updated") -> None:
        if self._quiet:
            return
        after = self.render.subscription(sub)
        self._emit(type_, after, previous_attributes(before, after) if type_.endswith(".updated") else None)

    def _inv_event(self, type_: str, inv: Invoice, before: JSON | None = None) -> None:
        if self._quiet:
            return
        after = self.render.invoice(inv)
        self._emit(type_, after, previous_attributes(before, after) if before is not None else None)

    # --------------------------------------------------------------- scheduling
    def _schedule(self, due: int, kind: str, ident: str, token: int) -> None:
        """Run ``_on_<kind>(ident, token)`` at ``due``, on the ledger in use now."""
        heapq.heappush(self._heap, (int(due), next(self._hseq), kind, ident, token, self._ledger))

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
            before = len(self._all_events)
            previous = self._ledger
            self._advancing = True
            try:
                while self._heap and self._heap[0][0] <= ts:
                    due, _, kind, ident, token, ledger = heapq.heappop(self._heap)
                    if due > self.clock.now():
                        self.clock.set(due)
                    self._ledger = ledger
                    self._quiet = self._is_quiet(kind, ident)
                    try:
                        getattr(self, f"_on_{kind}")(ident, token)
                    finally:
                        self._quiet = False
                self.clock.set(ts)
            finally:
                self._advancing = False
                self._ledger = previous
            return {"now": ts, "events": len(self._all_events) - before}

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
