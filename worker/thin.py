"""Thin events: the event says that an object changed; Stripe's API says what the object is now.

A thin event (an event destination's thin payload, `"object":
"v2.core.event"`) carries no snapshot: its `related_object` names the
object and its `context` the connected account. To apply one, the object is
fetched in that context (sent back as `Stripe-Context`, as Stripe's
libraries fetch a thin event and its object; the v2 API reads no
`Stripe-Account`) and applied as the
snapshot event of the same v1 type would be, through the same handler,
with the API answer's time as its Stripe time: an answer later than a
webhook already applied is newer, one earlier is skipped as stale. An
object without a URL of its own (an entitlement summary) is read from the
snapshot event the thin event names instead, with that event's time.

`v2.core.health.event_generation_failure.resolved` is how Stripe reports an
event it failed to generate (it is in no event list): the full event,
fetched, names the object and the event type that was lost, and that
object is fetched and applied the same way.
"""

from __future__ import annotations

from typing import Any

from subsync import config, event_types
from subsync.envelope import InvalidPayload
from subsync.event_types import GENERATION_FAILURE_RESOLVED, THIN_PREFIX
from subsync.stripe_api import StripeApi

# What a thin event may point at: a v1 object on Stripe's API, nothing else.
_OBJECT_PATH_PREFIX = "/v1/"


def is_thin(event_type: str) -> bool:
    """Thin events' types are namespaced (`v1.invoice.paid`, `v2.core...`); snapshot events' never are."""
    return event_type.startswith(("v1.", "v2."))


def snapshot_event(api: StripeApi | None, thin: dict[str, Any]) -> dict[str, Any] | None:
    """The snapshot event `thin` stands for, its object as Stripe shows it now; None for a type we do not handle.

    Raises what fetching raises (a Stripe error, a missing API key): the
    event then fails and is retried like any other.
    """
    event_type = thin.get("type")
    if event_type == GENERATION_FAILURE_RESOLVED:
        api = _api(api)
        context = thin.get("context")
        full, _ = api.get(f"/v2/core/events/{thin['id']}", context=context if isinstance(context, str) else None)
        impact = (full.get("data") or {}).get("impact") or {}
        v1_type = impact.get("event_type")
        related = impact.get("related_object")
        account = impact.get("context") or impact.get("account")
    elif isinstance(event_type, str) and event_type.startswith(THIN_PREFIX):
        v1_type = event_type.removeprefix(THIN_PREFIX)
        related = thin.get("related_object")
        account = thin.get("context")
    else:
        return None
    if not isinstance(v1_type, str) or not event_types.applies_fetched(v1_type):
        return None
    if related is None and event_type != GENERATION_FAILURE_RESOLVED:
        return _snapshot_twin(_api(api), thin, v1_type, account if isinstance(account, str) else None)
    url = related.get("url") if isinstance(related, dict) else None
    if not isinstance(url, str) or not url.startswith(_OBJECT_PATH_PREFIX) or ".." in url:
        msg = "the thin event names no v1 object to fetch"
        raise InvalidPayload(msg)
    obj, seen_at = _api(api).get(url, context=account if isinstance(account, str) else None)
    return {
        "id": thin["id"],
        "object": "event",
        "type": v1_type,
        "created": int(seen_at.timestamp()),
        "livemode": thin.get("livemode") is True,
        "account": account if isinstance(account, str) else None,
        "data": {"object": obj},
    }


def _snapshot_twin(api: StripeApi, thin: dict[str, Any], v1_type: str, account: str | None) -> dict[str, Any]:
    """The snapshot event of a thin event whose object has no URL of its own (an entitlement summary has no id).

    The thin event names its snapshot twin (`snapshot_event`; the full
    event says it when the delivery does not), which is applied as Stripe
    created it, with its own time.
    """
    snapshot_id = thin.get("snapshot_event")
    if not isinstance(snapshot_id, str):
        full, _ = api.get(f"/v2/core/events/{thin['id']}", context=account)
        snapshot_id = full.get("snapshot_event")
    if not isinstance(snapshot_id, str) or not snapshot_id.startswith("evt_") or "/" in snapshot_id:
        msg = "the thin event names neither an object nor its snapshot event"
        raise InvalidPayload(msg)
    snapshot, _ = api.get(f"/v1/events/{snapshot_id}", context=account)
    if snapshot.get("type") != v1_type or not isinstance((snapshot.get("data") or {}).get("object"), dict):
        msg = "the thin event's snapshot event is not of its type"
        raise InvalidPayload(msg)
    data = {"object": snapshot["data"]["object"]}
    previous = snapshot["data"].get("previous_attributes")
    if isinstance(previous, dict):  # what it says came before: how a same-second step is placed
        data["previous_attributes"] = previous
    return {
        "id": thin["id"],
        "object": "event",
        "type": v1_type,
        "created": snapshot["created"],
        "livemode": thin.get("livemode") is True,
        "account": account,
        "data": data,
    }


def _api(api: StripeApi | None) -> StripeApi:
    if api is None:
        msg = "STRIPE_API_KEY is not set: a thin event is applied by fetching its object from Stripe"
        raise config.ConfigError(msg)
    return api
