"""What an event needs from Stripe's API before it can be applied, fetched before the applying transaction.

Most events carry everything their handler needs. Some do not:

* a thin event carries no object: the object it names is fetched
  (worker.thin) and the event applied as its snapshot twin would be;
* some snapshot events carry an object that is not the whole story (a
  list cut short, a link Stripe's object no longer names): an enricher,
  chosen by the event's v1 type, fetches the rest and returns the event
  to apply (worker.entitlements: a summary cut short; worker.money: a
  refund's or dispute's charge, whose payment it was, a charge's refunds).

Fetching happens before the transaction, so that no lock is held while
Stripe answers; whatever fails is charged to that event alone (a failed
event with a retry, as for any transient error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from subsync import event_types
from subsync.stripe_api import StripeApi
from worker import entitlements, money, thin

# An enricher: given the API (None when no key is configured), the snapshot
# event and our database (to read what we hold rather than ask Stripe),
# returns the event to apply. It raises what fetching raises.
Enricher = Callable[[StripeApi | None, dict[str, Any], ConnectionPool[Any] | None], dict[str, Any]]

# By v1 event type.
ENRICHERS: dict[str, Enricher] = {
    event_types.ENTITLEMENT_SUMMARY_UPDATED: lambda api, event, _pool: entitlements.complete_summary(api, event),
    **dict.fromkeys(event_types.REFUND_EVENTS | event_types.DISPUTE_EVENTS, money.complete_reversal),
}


def needs_fetch(event_type: str) -> bool:
    """Whether an event of this type (as stored: thin types are namespaced) may need the API before it is applied."""
    return thin.is_thin(event_type) or event_type in ENRICHERS


def event_to_apply(
    api: StripeApi | None, payload: dict[str, Any], pool: ConnectionPool[Any] | None = None
) -> dict[str, Any] | None:
    """The snapshot event to apply for stored `payload`; None for a thin event of a type we do not handle."""
    event = payload
    if thin.is_thin(str(payload.get("type"))):
        fetched = thin.snapshot_event(api, payload)
        if fetched is None:
            return None
        event = fetched
    enrich = ENRICHERS.get(str(event.get("type")))
    return event if enrich is None else enrich(api, event, pool)
