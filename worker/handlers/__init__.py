"""One handler per kind of Stripe object (`HANDLERS`, keyed by subsync.event_types.kind_of).

Handlers run inside the applying transaction (worker.apply), which holds
the advisory locks `lock_keys` names for the events. Each applies a batch of
events of its kind that share no lock key (worker.waves), a few statements
for the batch, and returns each event's outcome. Named
`handle_<object>_events` after Zulip's corporate/ handlers.
"""

from __future__ import annotations

from typing import Any

from subsync import event_types
from subsync.reactivation import reactivated_by
from subsync.store.locks import entitlements_key, invoice_keys, subscription_key
from subsync.stripe_objects import invoice_subscription_id, summary_customer_id
from worker.handlers.checkout import handle_checkout_events
from worker.handlers.context import Context, Handler, context_for
from worker.handlers.customers import handle_customer_events
from worker.handlers.entitlements import handle_entitlements_events
from worker.handlers.invoices import handle_invoice_events
from worker.handlers.money import handle_money_events
from worker.handlers.subscriptions import handle_subscription_events

__all__ = ["HANDLERS", "Context", "Handler", "context_for", "lock_keys"]

HANDLERS: dict[event_types.Kind, Handler] = {
    "subscription": handle_subscription_events,
    "invoice": handle_invoice_events,
    "checkout": handle_checkout_events,
    "customer": handle_customer_events,
    "entitlements": handle_entitlements_events,
    "refund": handle_money_events,
    "dispute": handle_money_events,
}


def lock_keys(event_type: str, obj: dict[str, Any]) -> list[str]:
    """The advisory locks (subsync.store.locks) that applying this event needs.

    A worker applying several events in one transaction takes them all first,
    in one order, rather than one by one as each handler does on its own.
    """
    kind = event_types.kind_of(event_type)
    if kind == "entitlements":  # a summary has no id: it is the customer's
        customer_id = summary_customer_id(obj)
        return [] if customer_id is None else [entitlements_key(customer_id)]
    obj_id = obj.get("id")
    if kind is None or not isinstance(obj_id, str) or event_types.is_preview(event_type):
        return []
    if kind == "invoice":
        return invoice_keys(obj_id, invoice_subscription_id(obj), reactivated_by(obj))
    if kind == "subscription":
        return [subscription_key(obj_id)]
    return [f"{kind}:{obj_id}"]
