"""A refund or dispute event completed before it is applied: the charge's refunds, and whose payment it was.

Stripe's refund and dispute objects name only their charge, and a
`charge.refunded` carries the charge without its refunds (since 2022-11-15
they are in it only with `expand[]=refunds`). The worker looks up, on the
event's connected account (subsync.payment_links), the charge's customer,
invoice and subscription, and for a `charge.refunded` lists the charge's
refunds (`GET /v1/refunds?charge=`, to the end) unless its object carries
the whole list. The event is then applied with the list in its charge and
the links beside its object (`payment_links`), stated by
subsync.reversals. Without STRIPE_API_KEY such an event fails and is
retried: a row that names nobody could not be completed later.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from subsync import config
from subsync.payment_links import LinkFinder
from subsync.reversals import charge_id_of
from subsync.stripe_api import StripeApi
from subsync.stripe_objects import parse_charge
from worker.handlers.context import PAYMENT_LINKS


def complete_reversal(api: StripeApi | None, event: dict[str, Any], pool: ConnectionPool[Any] | None) -> dict[str, Any]:
    """`event` with its charge's refunds listed (a `charge.refunded`) and whose payment it was."""
    if api is None:
        msg = "STRIPE_API_KEY is not set: a refund or dispute event is completed from Stripe's API"
        raise config.ConfigError(msg)
    account = event.get("account") if isinstance(event.get("account"), str) else None
    obj = event["data"]["object"]
    finder = LinkFinder(api, pool, account=account)
    if event.get("type") == "charge.refunded":
        charge = parse_charge(obj)
        links = finder.of_charge(obj)
        if charge.refunds is None:
            listed = api.charge_refunds(charge.id, account=account)
            refunds = {"object": "list", "data": listed, "has_more": False, "url": f"/v1/charges/{charge.id}/refunds"}
            obj = {**obj, "refunds": refunds}
    else:
        links = finder.of_charge_id(charge_id_of(str(event.get("type")), obj))
    return {**event, "data": {**event["data"], "object": obj}, PAYMENT_LINKS: links.as_json()}
