"""The simulator: Stripe-like objects, a state machine and a simulated clock.

``Simulator`` is the core (state, lock, events, timed actions; ``core.py``)
with one mixin per resource (thin events and event generation failures
included, ``thin_events.py``, ``health.py``). A mixin holds that resource's operations and the
timed actions (``_on_<kind>``) it schedules; mixins reach one another only
through ``self``.
"""

from __future__ import annotations

from .accounts import AccountsMixin
from .bulk import BulkMixin
from .catalog import CatalogMixin
from .charges import ChargesMixin
from .checkout import CheckoutMixin
from .core import DEFAULT_PRICE, DEFAULT_PRODUCT, DEFAULT_SIGNING_KEY, YEARLY_PRICE
from .customers import CustomersMixin
from .disputes import DisputesMixin
from .entitlements import EntitlementsMixin
from .health import EventGenerationMixin
from .invoice_actions import InvoiceActionsMixin
from .invoice_items import InvoiceItemsMixin
from .invoices import InvoicesMixin
from .ledger import ADDON_MONTHLY_PRICE, ADDON_PRICE, ADDON_PRODUCT
from .model import LIVE_STATUSES, SUB_STATUSES
from .reading import EVENT_RETENTION, HIDDEN_BY_DEFAULT, ReadingMixin
from .refunds import RefundsMixin
from .settings import SettingsMixin
from .subscription_items import SubscriptionItemsMixin
from .subscription_timers import SubscriptionTimersMixin
from .subscriptions import SubscriptionsMixin

__all__ = [
    "ADDON_MONTHLY_PRICE",
    "ADDON_PRICE",
    "ADDON_PRODUCT",
    "DEFAULT_PRICE",
    "DEFAULT_PRODUCT",
    "DEFAULT_SIGNING_KEY",
    "EVENT_RETENTION",
    "HIDDEN_BY_DEFAULT",
    "LIVE_STATUSES",
    "SUB_STATUSES",
    "YEARLY_PRICE",
    "Simulator",
]


class Simulator(
    SettingsMixin,
    CatalogMixin,
    CustomersMixin,
    SubscriptionsMixin,
    SubscriptionItemsMixin,
    SubscriptionTimersMixin,
    InvoicesMixin,
    InvoiceItemsMixin,
    CheckoutMixin,
    RefundsMixin,
    DisputesMixin,
    ChargesMixin,
    EntitlementsMixin,
    BulkMixin,
    AccountsMixin,
    ReadingMixin,
    InvoiceActionsMixin,
    EventGenerationMixin,
):
    """An in-memory, Stripe-compatible platform account (and its connected accounts) driven by a simulated clock."""
