"""Stripe's Entitlements, read from its API: a customer's active entitlements, and whether an account has features.

The summary event shows a customer's first 10 active entitlements
(`has_more` when there are more); `GET /v1/entitlements/active_entitlements`
lists them all. A list read here is the customer's state at the time of
its first page: that is the Stripe time it is applied with, so a summary
Stripe created after that page was read is newer, and wins.
"""

from __future__ import annotations

from datetime import datetime

import stripe

from subsync.stripe_api import StripeApi, error_time
from subsync.stripe_objects import Entitlement, entitlement_set, parse_active_entitlement

ACTIVE_ENTITLEMENTS_PATH = "/v1/entitlements/active_entitlements"
FEATURES_PATH = "/v1/entitlements/features"


def active_entitlements(
    api: StripeApi, customer_id: str, *, account: str | None
) -> tuple[tuple[Entitlement, ...], datetime]:
    """Every active entitlement of the customer (of connected `account`), paged to the end, and its Stripe time.

    A customer Stripe does not know (deleted, say) has none.
    """
    found: list[Entitlement] = []
    first_seen: datetime | None = None
    try:
        for items, seen_at in api.page_answers(ACTIVE_ENTITLEMENTS_PATH, account=account, customer=customer_id):
            first_seen = first_seen or seen_at
            found.extend(parse_active_entitlement(item) for item in items)
    except stripe.InvalidRequestError as exc:
        if exc.code != "resource_missing" or first_seen is not None:
            raise
        return (), error_time(exc)
    assert first_seen is not None  # page_answers yields the first page, even empty
    return entitlement_set(found), first_seen


def has_features(api: StripeApi, *, account: str | None) -> bool:
    """Whether the account has any feature at all: one request; without one no customer can be entitled."""
    page, _ = api.get(FEATURES_PATH, account=account, limit=1)
    return bool(page.get("data"))
