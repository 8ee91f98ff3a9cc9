"""The ``/v1`` routes that create subscriptions and change their items, and the Connect account routes."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response

from .api import Expander, expanded
from .model import SimError
from .params import JSON, cursors, int_param, json_response, request_account, request_params
from .state import Simulator


def _metadata(p: JSON) -> dict[str, str] | None:
    value = p.get("metadata")
    return value if isinstance(value, dict) else None


def register_billing_api(app: Flask, sim: Simulator, expander: Expander) -> None:
    """``POST /v1/subscriptions`` and ``/v1/subscription_items``."""

    @app.post("/v1/subscriptions")
    def create_subscription() -> Response:
        p = request_params()
        customer = p.get("customer")
        if not customer:
            raise SimError("Missing required param: customer.", code="parameter_missing", param="customer")
        items = p.get("items")
        if not isinstance(items, list) or not items:
            raise SimError("Missing required param: items.", code="parameter_missing", param="items")
        kwargs: dict[str, Any] = {}
        if p.get("payment_behavior"):
            kwargs["payment_behavior"] = p["payment_behavior"]
        sub = sim.create_subscription(
            customer,
            items=items,
            trial_days=int_param(p, "trial_period_days"),
            trial_end="now" if p.get("trial_end") == "now" else int_param(p, "trial_end"),
            metadata=_metadata(p),
            billing_mode=p.get("billing_mode"),
            account=request_account(),
            **kwargs,
        )
        return expanded(expander, sub, p)

    @app.get("/v1/subscription_items")
    def list_subscription_items() -> Response:
        p = request_params()
        subscription = p.get("subscription")
        if not subscription:
            raise SimError("Missing required param: subscription.", code="parameter_missing", param="subscription")
        return json_response(sim.list_subscription_items(subscription, account=request_account(), **cursors(p)))

    @app.get("/v1/subscription_items/<ident>")
    def get_subscription_item(ident: str) -> Response:
        return json_response(sim.get_subscription_item(ident, account=request_account()))

    @app.post("/v1/subscription_items")
    def create_subscription_item() -> Response:
        p = request_params()
        subscription, price = p.get("subscription"), p.get("price")
        if not subscription or not price:
            param = "subscription" if not subscription else "price"
            raise SimError(f"Missing required param: {param}.", code="parameter_missing", param=param)
        acct = request_account()
        spec: dict[str, Any] = {"price": price, "quantity": int_param(p, "quantity") or 1}
        sub = sim.update_subscription_items(subscription, add=[spec], account=acct)
        return json_response(sim.get_subscription_item(sub["items"]["data"][-1]["id"], account=acct))

    @app.post("/v1/subscription_items/<ident>")
    def update_subscription_item(ident: str) -> Response:
        p = request_params()
        acct = request_account()
        item = sim.get_subscription_item(ident, account=acct)
        quantity = int_param(p, "quantity")
        if quantity is not None:
            sim.update_subscription_items(item["subscription"], quantities={ident: quantity}, account=acct)
        return json_response(sim.get_subscription_item(ident, account=acct))

    @app.delete("/v1/subscription_items/<ident>")
    def delete_subscription_item(ident: str) -> Response:
        acct = request_account()
        item = sim.get_subscription_item(ident, account=acct)
        sim.update_subscription_items(item["subscription"], remove=[ident], account=acct)
        return json_response({"id": ident, "object": "subscription_item", "deleted": True})


def register_accounts_api(app: Flask, sim: Simulator) -> None:
    """``/v1/account`` (the request's own account) and ``/v1/accounts`` (the platform's connected ones)."""

    @app.get("/v1/account")
    def get_own_account() -> Response:
        return json_response(sim.get_account(request_account()))

    @app.get("/v1/accounts")
    def list_accounts() -> Response:
        p = request_params()
        if request_account() is not None:  # a connected account has no connected accounts of its own
            return json_response({"object": "list", "data": [], "has_more": False, "url": "/v1/accounts"})
        return json_response(sim.list_accounts(**cursors(p)))

    @app.get("/v1/accounts/<ident>")
    def get_account(ident: str) -> Response:
        sim.account_access(ident)
        return json_response(sim.get_account(ident))

    @app.post("/v1/accounts")
    def create_account() -> Response:
        p = request_params()
        profile = p.get("business_profile")
        if not isinstance(profile, dict):
            profile = {}
        return json_response(
            sim.create_account(
                type=p.get("type") or "standard",
                country=p.get("country") or "US",
                email=p.get("email"),
                business_name=profile.get("name"),
                metadata=_metadata(p),
            )
        )
