"""The ``/v1`` routes of Entitlements (features, product features, active entitlements) and invoice items."""

from __future__ import annotations

from flask import Flask, Response

from .api import Expander, expanded
from .model import SimError
from .params import JSON, bool_param, created_param, cursors, int_param, json_response, request_account, request_params
from .state import Simulator


def _metadata(p: JSON) -> dict[str, str] | None:
    value = p.get("metadata")
    return value if isinstance(value, dict) else None


def _required(p: JSON, name: str) -> str:
    value = p.get(name)
    if not value or not isinstance(value, str):
        raise SimError(f"Missing required param: {name}.", code="parameter_missing", param=name)
    return value


def _optional_bool(p: JSON, name: str) -> bool | None:
    return None if p.get(name) in (None, "") else bool_param(p[name])


def register_entitlements_api(app: Flask, sim: Simulator, expander: Expander) -> None:
    """``/v1/entitlements/...`` and ``/v1/products/{id}/features``."""

    @app.get("/v1/entitlements/features")
    def list_features() -> Response:
        p = request_params()
        out = sim.list_features(
            lookup_key=p.get("lookup_key"),
            archived=_optional_bool(p, "archived"),
            account=request_account(),
            **cursors(p),
        )
        return json_response(out)

    @app.post("/v1/entitlements/features")
    def create_feature() -> Response:
        p = request_params()
        out = sim.create_feature(
            _required(p, "lookup_key"), _required(p, "name"), metadata=_metadata(p), account=request_account()
        )
        return json_response(out)

    @app.get("/v1/entitlements/features/<ident>")
    def get_feature(ident: str) -> Response:
        return json_response(sim.get_feature(ident, account=request_account()))

    @app.post("/v1/entitlements/features/<ident>")
    def update_feature(ident: str) -> Response:
        p = request_params()
        out = sim.update_feature(
            ident,
            name=p.get("name") or None,
            metadata=_metadata(p),
            active=_optional_bool(p, "active"),
            account=request_account(),
        )
        return json_response(out)

    @app.get("/v1/products/<product>/features")
    def list_product_features(product: str) -> Response:
        p = request_params()
        return json_response(sim.list_product_features(product, account=request_account(), **cursors(p)))

    @app.post("/v1/products/<product>/features")
    def attach_feature(product: str) -> Response:
        p = request_params()
        return json_response(
            sim.attach_feature(product, _required(p, "entitlement_feature"), account=request_account())
        )

    @app.get("/v1/products/<product>/features/<ident>")
    def get_product_feature(product: str, ident: str) -> Response:
        return json_response(sim.get_product_feature(product, ident, account=request_account()))

    @app.delete("/v1/products/<product>/features/<ident>")
    def detach_feature(product: str, ident: str) -> Response:
        return json_response(sim.detach_feature(product, ident, account=request_account()))

    @app.get("/v1/entitlements/active_entitlements")
    def list_active_entitlements() -> Response:
        p = request_params()
        out = sim.list_active_entitlements(_required(p, "customer"), account=request_account(), **cursors(p))
        return expanded(expander, out, p)

    @app.get("/v1/entitlements/active_entitlements/<ident>")
    def get_active_entitlement(ident: str) -> Response:
        return expanded(expander, sim.get_active_entitlement(ident, account=request_account()), request_params())


def register_invoice_items_api(app: Flask, sim: Simulator, expander: Expander) -> None:
    """``/v1/invoiceitems``."""

    @app.post("/v1/invoiceitems")
    def create_invoice_item() -> Response:
        p = request_params()
        amount = int_param(p, "amount")
        unit_amount = int_param(p, "unit_amount")
        quantity = int_param(p, "quantity") or 1
        if amount is None and unit_amount is None:
            raise SimError("Missing required param: amount.", code="parameter_missing", param="amount")
        out = sim.create_invoice_item(
            _required(p, "customer"),
            amount if amount is not None else (unit_amount or 0) * quantity,
            currency=p.get("currency") or "usd",
            description=p.get("description") or None,
            subscription=p.get("subscription") or None,
            quantity=quantity,
            metadata=_metadata(p),
            account=request_account(),
        )
        return expanded(expander, out, p)

    @app.get("/v1/invoiceitems")
    def list_invoice_items() -> Response:
        p = request_params()
        out = sim.list_invoice_items(
            customer=p.get("customer"),
            invoice=p.get("invoice"),
            pending=_optional_bool(p, "pending"),
            created=created_param(p),
            account=request_account(),
            **cursors(p),
        )
        return expanded(expander, out, p)

    @app.get("/v1/invoiceitems/<ident>")
    def get_invoice_item(ident: str) -> Response:
        return expanded(expander, sim.get_invoice_item(ident, account=request_account()), request_params())

    @app.delete("/v1/invoiceitems/<ident>")
    def delete_invoice_item(ident: str) -> Response:
        return json_response(sim.delete_invoice_item(ident, account=request_account()))
