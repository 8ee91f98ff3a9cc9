"""The ``/v1`` routes that change an invoice by hand: finalize, void, mark uncollectible."""

from __future__ import annotations

from flask import Flask, Response

from .api import Expander, expanded
from .params import bool_param, request_account, request_params
from .state import Simulator


def register_invoice_actions_api(app: Flask, sim: Simulator, expander: Expander) -> None:
    """``POST /v1/invoices/{id}/finalize`` (``auto_advance``), ``/void`` and ``/mark_uncollectible``."""

    @app.post("/v1/invoices/<ident>/finalize")
    def finalize_invoice(ident: str) -> Response:
        p = request_params()
        auto = bool_param(p["auto_advance"]) if "auto_advance" in p else None
        return expanded(expander, sim.finalize_invoice(ident, auto_advance=auto, account=request_account()), p)

    @app.post("/v1/invoices/<ident>/void")
    def void_invoice(ident: str) -> Response:
        return expanded(expander, sim.void_invoice(ident, account=request_account()), request_params())

    @app.post("/v1/invoices/<ident>/mark_uncollectible")
    def mark_uncollectible(ident: str) -> Response:
        return expanded(expander, sim.mark_uncollectible(ident, account=request_account()), request_params())
