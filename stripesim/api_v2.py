"""The ``/v2/core/events`` routes: thin events of the request's account (``Stripe-Context`` alone), 30 days back."""

from __future__ import annotations

from flask import Flask, Response

from .params import int_param, json_response, request_context_account, request_params
from .state import Simulator


def register_v2_api(app: Flask, sim: Simulator) -> None:
    """``GET /v2/core/events`` (``types``, ``object_id``, ``created[...]``, ``limit``, ``page``) and one by id."""

    @app.get("/v2/core/events")
    def list_v2_events() -> Response:
        p = request_params()
        types = p.get("types")
        if isinstance(types, str):
            types = [types]
        created = p.get("created")
        out = sim.list_v2_events(
            types=types,
            object_id=p.get("object_id") or None,
            created=created if isinstance(created, dict) else None,
            limit=int_param(p, "limit"),
            page=p.get("page") or None,
            account=request_context_account(),
        )
        return json_response(out)

    @app.get("/v2/core/events/<ident>")
    def get_v2_event(ident: str) -> Response:
        return json_response(sim.get_v2_event(ident, account=request_context_account()))
