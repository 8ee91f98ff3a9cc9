"""The ``/v1`` routes of charges, payment intents, refunds, disputes and invoice payments.

Lists take ``created[...]`` and cursors like every list. ``/v1/invoice_payments``
exists from ``2025-03-31.basil`` on; before, it is an unrecognized URL, as the
object did not exist.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import NotFound

from .api import Expander, expanded
from .model import SimError
from .params import JSON, bool_param, created_param, cursors, int_param, request_account, request_params
from .state import Simulator


def _metadata(p: JSON) -> dict[str, str] | None:
    value = p.get("metadata")
    return value if isinstance(value, dict) else None


def register_money_api(app: Flask, sim: Simulator, expander: Expander) -> None:
    """Charges, payment intents, refunds, disputes, invoice payments."""

    @app.get("/v1/charges")
    def list_charges() -> Response:
        p = request_params()
        out = sim.list_charges(
            customer=p.get("customer"),
            payment_intent=p.get("payment_intent"),
            created=created_param(p),
            account=request_account(),
            **cursors(p),
        )
        return expanded(expander, out, p)

    @app.get("/v1/charges/<ident>")
    def get_charge(ident: str) -> Response:
        p = request_params()
        return expanded(expander, sim.get_charge(ident, account=request_account()), p)

    @app.get("/v1/payment_intents")
    def list_payment_intents() -> Response:
        p = request_params()
        out = sim.list_payment_intents(
            customer=p.get("customer"), created=created_param(p), account=request_account(), **cursors(p)
        )
        return expanded(expander, out, p)

    @app.get("/v1/payment_intents/<ident>")
    def get_payment_intent(ident: str) -> Response:
        return expanded(expander, sim.get_payment_intent(ident, account=request_account()), request_params())

    @app.get("/v1/refunds")
    def list_refunds() -> Response:
        p = request_params()
        out = sim.list_refunds(
            charge=p.get("charge"),
            payment_intent=p.get("payment_intent"),
            created=created_param(p),
            account=request_account(),
            **cursors(p),
        )
        return expanded(expander, out, p)

    @app.get("/v1/refunds/<ident>")
    def get_refund(ident: str) -> Response:
        return expanded(expander, sim.get_refund(ident, account=request_account()), request_params())

    @app.post("/v1/refunds")
    def create_refund() -> Response:
        p = request_params()
        target = p.get("charge") or p.get("payment_intent")
        if not target:
            raise SimError(
                "One of the following params should be provided for this request: payment_intent or charge.",
                code="parameter_missing",
                param="charge",
            )
        if p.get("charge") and p.get("payment_intent"):
            raise SimError("You may only specify one of these parameters: charge, payment_intent.", param="charge")
        out = sim.refund(
            target,
            amount=int_param(p, "amount"),
            reason=p.get("reason") or None,
            metadata=_metadata(p),
            account=request_account(),
        )
        return expanded(expander, out, p)

    @app.get("/v1/disputes")
    def list_disputes() -> Response:
        p = request_params()
        out = sim.list_disputes(
            charge=p.get("charge"),
            payment_intent=p.get("payment_intent"),
            created=created_param(p),
            account=request_account(),
            **cursors(p),
        )
        return expanded(expander, out, p)

    @app.get("/v1/disputes/<ident>")
    def get_dispute(ident: str) -> Response:
        return expanded(expander, sim.get_dispute(ident, account=request_account()), request_params())

    @app.post("/v1/disputes/<ident>")
    def update_dispute(ident: str) -> Response:
        p = request_params()
        evidence = p.get("evidence")
        out = sim.update_dispute(
            ident,
            evidence=evidence if isinstance(evidence, dict) else None,
            submit=bool_param(p.get("submit", True)),
            metadata=_metadata(p),
            account=request_account(),
        )
        return expanded(expander, out, p)

    @app.post("/v1/disputes/<ident>/close")
    def close_dispute(ident: str) -> Response:
        return expanded(expander, sim.accept_dispute(ident, account=request_account()), request_params())

    @app.get("/v1/invoice_payments")
    def list_invoice_payments() -> Response:
        if not sim.render.basil:
            raise NotFound()
        p = request_params()
        payment: Any = p.get("payment")
        out = sim.list_invoice_payments(
            invoice=p.get("invoice"),
            payment_intent=payment.get("payment_intent") if isinstance(payment, dict) else None,
            status=p.get("status"),
            created=created_param(p),
            account=request_account(),
            **cursors(p),
        )
        return expanded(expander, out, p)

    @app.get("/v1/invoice_payments/<ident>")
    def get_invoice_payment(ident: str) -> Response:
        if not sim.render.basil:
            raise NotFound()
        return expanded(expander, sim.get_invoice_payment(ident, account=request_account()), request_params())
