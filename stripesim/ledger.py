"""One account's objects: the platform's, or a connected account's (Connect).

Each account has a ledger of its own (catalogue, customers, subscriptions,
invoices, checkout sessions, events and their creation-ordered indexes), so
an object of one account is simply not found in another. The simulator works
on one ledger at a time (``SimCore._ledger``); :class:`LedgerViews` selects it
by account id and lets the resource mixins read its parts as plain attributes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .entitlements_model import EntitlementsBook
from .invoice_items_model import InvoiceItemsBook
from .model import Account, CheckoutSession, Customer, Invoice, Price, Product, SimError, Subscription, redact_key
from .payments_model import PaymentsBook
from .shapes import JSON

DEFAULT_PRICE = "price_premium_monthly"
YEARLY_PRICE = "price_premium_yearly"
DEFAULT_PRODUCT = "prod_premium"
ADDON_PRICE = "price_addon_yearly"
ADDON_MONTHLY_PRICE = "price_addon_monthly"
ADDON_PRODUCT = "prod_addon"


@dataclass(eq=False)
class Ledger:
    """Everything one account owns. ``account`` is None for the platform."""

    account: Account | None
    products: dict[str, Product] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    sessions: dict[str, CheckoutSession] = field(default_factory=dict)
    # creation-ordered indexes (the clock never goes back, so also by created)
    sub_ids: list[str] = field(default_factory=list)
    sub_pos: dict[str, int] = field(default_factory=dict)
    subs_by_customer: dict[str, list[str]] = field(default_factory=dict)
    item_sub: dict[str, str] = field(default_factory=dict)  # subscription item -> its subscription
    inv_ids: list[str] = field(default_factory=list)
    inv_pos: dict[str, int] = field(default_factory=dict)
    invs_by_sub: dict[str, list[str]] = field(default_factory=dict)
    cus_ids: list[str] = field(default_factory=list)
    cus_pos: dict[str, int] = field(default_factory=dict)
    events: list[JSON] = field(default_factory=list)
    event_created: list[int] = field(default_factory=list)
    event_pos: dict[str, int] = field(default_factory=dict)
    # the books of the mixins that keep records of their own
    payments: PaymentsBook = field(default_factory=PaymentsBook)
    entitlements: EntitlementsBook = field(default_factory=EntitlementsBook)
    invoice_items: InvoiceItemsBook = field(default_factory=InvoiceItemsBook)

    @property
    def account_id(self) -> str | None:
        return None if self.account is None else self.account.id


def no_access(api_key: str, account: str) -> SimError:
    """Stripe's answer to a ``Stripe-Account`` the key cannot act for, or that does not exist."""
    return SimError(
        f"The provided key '{redact_key(api_key)}' does not have access to account '{account}' "
        "(or that account does not exist). Application access may have been revoked.",
        status=403,
        code="account_invalid",
        doc_url="https://stripe.com/docs/error-codes/account-invalid",
    )


def new_ledger(account: Account | None, now: int, default_catalog: bool) -> Ledger:
    """A ledger with the built-in catalogue: every account can sell the same prices."""
    led = Ledger(account)
    if default_catalog:
        led.products[DEFAULT_PRODUCT] = Product(DEFAULT_PRODUCT, "Premium Plan", now)
        led.products[ADDON_PRODUCT] = Product(ADDON_PRODUCT, "Priority Support", now)
        for price in (
            Price(DEFAULT_PRICE, DEFAULT_PRODUCT, 2999, "usd", "month", 1, now, "Premium monthly"),
            Price(YEARLY_PRICE, DEFAULT_PRODUCT, 29990, "usd", "year", 1, now, "Premium yearly"),
            Price(ADDON_PRICE, ADDON_PRODUCT, 9900, "usd", "year", 1, now, "Priority Support yearly"),
            Price(ADDON_MONTHLY_PRICE, ADDON_PRODUCT, 990, "usd", "month", 1, now, "Priority Support monthly"),
        ):
            led.prices[price.id] = price
    return led


class LedgerViews:
    """Which ledger is in use, chosen by account, and its parts under the names the resource mixins use."""

    lock: threading.RLock
    api_key: str
    platform: Ledger
    platform_id: str
    connected: dict[str, Ledger]
    _ledger: Ledger

    def _ledger_of(self, account: str | None) -> Ledger:
        """The ledger ``account`` names: the platform's for None or its own id."""
        if account is None or account in ("", self.platform_id):
            return self.platform
        led = self.connected.get(account)
        if led is None:
            raise no_access(self.api_key, account)
        return led

    def _use(self, account: str | None) -> None:
        """Work on ``account``'s ledger until the operation returns (see :func:`operation`)."""
        self._ledger = self._ledger_of(account)

    @contextmanager
    def _acting(self, account: str | None) -> Iterator[Ledger]:
        """The lock held and ``account``'s ledger in use, for reads (no request id)."""
        with self.lock:
            previous = self._ledger
            self._ledger = self._ledger_of(account)
            try:
                yield self._ledger
            finally:
                self._ledger = previous

    def _account_name(self) -> str:
        acct = self._ledger.account
        if acct is None:
            return "subsync simulator"
        return acct.business_name or acct.id

    # ------------------------------------------------------ the ledger's parts

    @property
    def products(self) -> dict[str, Product]:
        return self._ledger.products

    @property
    def prices(self) -> dict[str, Price]:
        return self._ledger.prices

    @property
    def customers(self) -> dict[str, Customer]:
        return self._ledger.customers

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        return self._ledger.subscriptions

    @property
    def invoices(self) -> dict[str, Invoice]:
        return self._ledger.invoices

    @property
    def sessions(self) -> dict[str, CheckoutSession]:
        return self._ledger.sessions

    @property
    def events(self) -> list[JSON]:
        return self._ledger.events

    @property
    def _sub_ids(self) -> list[str]:
        return self._ledger.sub_ids

    @property
    def _sub_pos(self) -> dict[str, int]:
        return self._ledger.sub_pos

    @property
    def _subs_by_customer(self) -> dict[str, list[str]]:
        return self._ledger.subs_by_customer

    @property
    def _inv_ids(self) -> list[str]:
        return self._ledger.inv_ids

    @property
    def _inv_pos(self) -> dict[str, int]:
        return self._ledger.inv_pos

    @property
    def _invs_by_sub(self) -> dict[str, list[str]]:
        return self._ledger.invs_by_sub

    @property
    def _cus_ids(self) -> list[str]:
        return self._ledger.cus_ids

    @property
    def _cus_pos(self) -> dict[str, int]:
        return self._ledger.cus_pos

    @property
    def _event_created(self) -> list[int]:
        return self._ledger.event_created

    @property
    def _event_pos(self) -> dict[str, int]:
        return self._ledger.event_pos
