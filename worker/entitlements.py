"""A summary cut short: the customer's whole list of active entitlements, from Stripe's API, before it is applied.

Stripe's `entitlements.active_entitlement_summary.updated` shows the first
10 entitlements and says `has_more` when there are more. Applying those 10
as the customer's set would revoke the rest, so the worker lists them all
(on the event's connected account) and applies that list instead, with the
time of the API answer: it is the customer's state now, like a thin
event's object, so an older summary arriving later is skipped and a newer
one still wins.
"""

from __future__ import annotations

from typing import Any

from subsync import config, entitlements
from subsync.stripe_api import StripeApi
from subsync.stripe_objects import parse_entitlement_summary


def complete_summary(api: StripeApi | None, event: dict[str, Any]) -> dict[str, Any]:
    """`event` itself when its summary shows every entitlement; else the event with the whole list, stamped now."""
    obj = event["data"]["object"]
    account = event.get("account") if isinstance(event.get("account"), str) else None
    summary = parse_entitlement_summary(obj, account=account)
    if not summary.has_more:
        return event
    if api is None:
        msg = "STRIPE_API_KEY is not set: a summary with more than 10 entitlements is completed from Stripe's API"
        raise config.ConfigError(msg)
    listed, seen_at = entitlements.active_entitlements(api, summary.customer_id, account=account)
    data = [
        {"object": "entitlements.active_entitlement", "id": e.id, "feature": e.feature_id, "lookup_key": e.lookup_key}
        for e in listed
    ]
    complete = {**obj, "entitlements": {**obj["entitlements"], "data": data, "has_more": False}}
    # Without previous_attributes: the list is the state now, not the step the event told of.
    return {**event, "created": int(seen_at.timestamp()), "data": {"object": complete}}
