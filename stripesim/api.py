"""The ``/v1`` routes for subscriptions, invoices, customers, sessions, prices and events.

Every route reads or changes the objects of the request's account (the
``Stripe-Account`` header, checked by the app before the route runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response

from .model import SimError
from .params import JSON, bool_param, created_param, cursors, json_response, request_account, request_params
from .state import Simulator


class Expander:
    """``expand[]=latest_invoice`` and friends: replace an id by its object of the same account."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def fetch(self, ident: str, account: str | None) -> JSON | None:
        getters: list[tuple[str, Callable[..., JSON]]] = [
            ("sub_", self.sim.get_subscription),
            ("in_", self.sim.get_invoice),
            ("cus_", self.sim.get_customer),
            ("cs_", self.sim.get_checkout_session),
            ("price_", self.sim.get_price),
            ("ch_", self.sim.get_charge),
            ("pi_", self.sim.get_payment_intent),
            ("re_", self.sim.get_refund),
            ("du_", self.sim.get_dispute),
            ("inpay_", self.sim.get_invoice_payment),
            ("ii_", self.sim.get_invoice_item),
            ("feat_", self.sim.get_feature),
        ]
        for prefix, get in getters:
            if ident.startswith(prefix):
                try:
                    return get(ident, account=account)
                except SimError:
                    return None
        return None

    def include(self, obj: JSON, field: str, account: str | None) -> Any:
        """An includable field, absent unless expanded: an invoice's ``payments`` (basil+), a charge's ``refunds``."""
        kind = obj.get("object")
        try:
            if kind == "invoice" and field == "payments" and self.sim.render.basil:
                return self.sim.invoice_payments_of(obj["id"], account=account)
            if kind == "charge" and field == "refunds":
                return self.sim.get_charge(obj["id"], expand_refunds=True, account=account)["refunds"]
        except SimError:
            return None
        return None

    def apply(self, obj: JSON, paths: list[str], account: str | None) -> JSON:
        for path in paths:
            self._apply_path(obj, path.split("."), account)
        return obj

    def _apply_path(self, obj: Any, parts: list[str], account: str | None) -> None:
        if not parts or not isinstance(obj, dict):
            return
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(obj.get("data"), list):
            for item in obj["data"]:
                self._apply_path(item, rest, account)
            return
        value = obj.get(head)
        if head not in obj:
            value = self.include(obj, head, account)
            if value is not None:
                obj[head] = value
        if isinstance(value, str) and not rest:
            full = self.fetch(value, account)
            if full is not None:
                obj[head] = full
        elif isinstance(value, dict):
            self._apply_path(value, rest, account)


def expanded(expander: Expander, obj: JSON, p: JSON) -> Response:
    paths = p.get("expand") or []
    if isinstance(paths, str):
        paths = [paths]
    return json_response(expander.apply(obj, paths, request_account()) if paths else obj)


def register_api(app: Flask, sim: Simulator, expander: Expander) -> None:
    """The read routes and the subscription changes of the original API."""

    @app.get("/v1/subscriptions")
    def list_subscriptions() -> Response:
        p = request_params()
        out = sim.list_subscriptions(
            status=p.get("status"),
            customer=p.get("customer"),
            price=p.get("price"),
            created=created_param(p),
            account=request_account(),
            **cursors(p),
        )
        return expanded(expander, out, p)

    @app.get("/v1/subscriptions/<ident>")
    def get_subscription(ident: str) -> Response:
        return expanded(expander, sim.get_subscription(ident, account=request_account()), request_params())

    @app.post("/v1/subscriptions/<ident>")
    def update_subscription(ident: str) -> Response:
        p = request_params()
        acct = request_account()
        current = sim.get_subscription(ident, account=acct)
        if "cancel_at_period_end" in p:
            wanted = bool_param(p["cancel_at_period_end"])
            if wanted and not current["cancel_at_period_end"]:
                sim.cancel_subscription(ident, at_period_end=True, account=acct)
            elif not wanted and current["cancel_at_period_end"]:
                sim.uncancel_subscription(ident, account=acct)
        if isinstance(p.get("items"), list):
            change_items(sim, ident, p["items"], acct)
        if isinstance(p.get("metadata"), dict):
            sim.update_subscription_metadata(ident, p["metadata"], account=acct)
        return expanded(expander, sim.get_subscription(ident, account=acct), p)

    @app.delete("/v1/subscriptions/<ident>")
    def cancel_subscription(ident: str) -> Response:
        acct = request_account()
        sim.get_subscription(ident, account=acct)
        return expanded(expander, sim.cancel_subscription(ident, account=acct), request_params())

    @app.get("/v1/invoices")
    def list_invoices() -> Response:
        p = request_params()
        out = sim.list_invoices(
            subscription=p.get("subscription"),
            customer=p.get("customer"),
            status=p.get("status"),
            created=created_param(p),
            account=request_account(),
            **cursors(p),
        )
        return expanded(expander, out, p)

    @app.get("/v1/invoices/<ident>")
    def get_invoice(ident: str) -> Response:
        return expanded(expander, sim.get_invoice(ident, account=request_account()), request_params())

    @app.get("/v1/customers")
    def list_customers() -> Response:
        p = request_params()
        return json_response(sim.list_customers(email=p.get("email"), account=request_account(), **cursors(p)))

    @app.get("/v1/customers/<ident>")
    def get_customer(ident: str) -> Response:
        return json_response(sim.get_customer(ident, account=request_account()))

    @app.get("/v1/checkout/sessions/<ident>")
    def get_checkout_session(ident: str) -> Response:
        return expanded(expander, sim.get_checkout_session(ident, account=request_account()), request_params())

    @app.get("/v1/prices/<ident>")
    def get_price(ident: str) -> Response:
        return json_response(sim.get_price(ident, account=request_account()))

    @app.get("/v1/events")
    def list_events() -> Response:
        p = request_params()
        types = p.get("types")
        if isinstance(types, str):
            types = [types]
        out = sim.list_events(
            type=p.get("type"),
            types=types,
            created=created_param(p),
            account=request_account(),
            **cursors(p),
        )
        return json_response(out)

    @app.get("/v1/events/<ident>")
    def get_event(ident: str) -> Response:
        return json_response(sim.get_event(ident, account=request_account()))


def change_items(sim: Simulator, subscription: str, items: list[Any], account: str | None) -> JSON:
    """``items[n]`` of ``POST /v1/subscriptions/{id}``: ``{id, deleted}`` removes, ``{id, quantity}`` and
    ``{id, price}`` change, ``{price, quantity}`` adds."""
    add: list[dict[str, Any]] = []
    remove: list[str] = []
    quantities: dict[str, int] = {}
    prices: dict[str, str] = {}
    for i, spec in enumerate(items):
        if not isinstance(spec, dict):
            raise SimError(f"Invalid items[{i}]: must be an object", param=f"items[{i}]")
        ident = spec.get("id")
        if ident and bool_param(spec.get("deleted", False)):
            remove.append(ident)
        elif ident:
            if "quantity" in spec:
                quantities[ident] = int(spec["quantity"])
            if spec.get("price"):
                prices[ident] = str(spec["price"])
        else:
            add.append(spec)
    return sim.update_subscription_items(
        subscription,
        add=add or None,
        remove=remove or None,
        quantities=quantities or None,
        account=account,
        prices=prices or None,
    )
