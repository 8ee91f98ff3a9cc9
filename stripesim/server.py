"""The HTTP face of the simulator: a Stripe-like ``/v1`` API and ``/_sim`` control endpoints.

Every response carries ``Date`` set to the SIMULATED clock (RFC 1123) and a
``Request-Id``. ``/v1`` requests need ``Authorization: Bearer <api_key>`` (or
HTTP basic with the key as user name); injected rate limiting answers 429
with ``Stripe-Should-Retry: true``. A ``Stripe-Account`` header makes the
request act for that connected account; one the key cannot reach answers 403
``account_invalid``, as Stripe does; ``Stripe-Context`` (which supersedes it,
and is what thin events name) selects the account as well; on ``/v2`` it
alone does. ``/v2/core/events`` serves thin events. ``/_sim`` needs no key.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server

from .api import Expander, register_api
from .api_billing import register_accounts_api, register_billing_api
from .api_entitlements import register_entitlements_api, register_invoice_items_api
from .api_invoices import register_invoice_actions_api
from .api_money import register_money_api
from .api_v2 import register_v2_api
from .control_extras import extra_operations
from .control_ops import EVENT_READ_ONLY_OPS, event_and_invoice_operations
from .idempotency import register_idempotency
from .model import SimError, redact_key
from .params import JSON, json_response, parse_params
from .state import Simulator

__all__ = ["create_app", "make_sim_server", "parse_params", "start_in_thread"]


def _error(err: SimError) -> Response:
    resp = json_response(err.body(), err.status)
    if err.status == 429:
        resp.headers["Stripe-Should-Retry"] = "true"
    return resp


def _api_key() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:].strip() or None
    if auth.startswith("Basic "):
        try:
            user = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            return None
        return user or None
    return None


def create_app(sim: Simulator) -> Flask:
    """The Flask app serving ``sim``."""
    app = Flask("stripesim")
    expander = Expander(sim)

    @app.before_request
    def _auth_and_limits() -> Response | None:
        if not request.path.startswith(("/v1/", "/v2/")):
            return None
        key = _api_key()
        if key is None:
            return _error(
                SimError(
                    "You did not provide an API key. You need to provide your API key in the Authorization "
                    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                    status=401,
                )
            )
        if key != sim.api_key:
            return _error(SimError(f"Invalid API Key provided: {redact_key(key)}", status=401))
        account = request.headers.get("Stripe-Account", "").strip() or None
        context = request.headers.get("Stripe-Context", "").strip()
        if context:
            account = context.split("/")[-1] or None  # the last segment is the account acted for
        try:
            sim.account_access(account)
        except SimError as err:
            return _error(err)
        g.stripe_account = None if account == sim.platform_id else account
        # The v2 API is told another account by Stripe-Context alone.
        g.stripe_context_account = g.stripe_account if context else None
        if sim.take_rate_limit():
            return _error(
                SimError(
                    "Request rate limit exceeded. Learn more about rate limits here "
                    "https://stripe.com/docs/rate-limits.",
                    status=429,
                    code="rate_limit",
                )
            )
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Date"] = formatdate(sim.now(), usegmt=True)
        resp.headers["Request-Id"] = "req_" + uuid.uuid4().hex[:14]
        resp.headers["Stripe-Version"] = sim.api_version
        resp.headers["Cache-Control"] = "no-cache, no-store"
        return resp

    @app.errorhandler(SimError)
    def _sim_error(err: SimError) -> Response:
        return _error(err)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        if status == 404:
            msg = f"Unrecognized request URL ({request.method}: {request.path})."
        else:
            msg = err.description or "error"
        return json_response({"error": {"type": "invalid_request_error", "message": msg}}, status)

    register_api(app, sim, expander)
    register_billing_api(app, sim, expander)
    register_accounts_api(app, sim)
    register_invoice_actions_api(app, sim, expander)
    register_v2_api(app, sim)
    register_money_api(app, sim, expander)
    register_entitlements_api(app, sim, expander)
    register_invoice_items_api(app, sim, expander)
    register_idempotency(app, sim)

    @app.before_request
    def _latency() -> None:
        # After the idempotency check: the key is in use while the request waits.
        if request.path.startswith(("/v1/", "/v2/")):
            seconds = sim.take_latency(request.method, request.path)
            if seconds > 0:
                time.sleep(seconds)

    _register_control(app, sim)
    return app


def _register_control(app: Flask, sim: Simulator) -> None:
    ops = {**control_operations(sim), **event_and_invoice_operations(sim)}

    @app.post("/_sim/<op>")
    def control(op: str) -> Response:
        fn = ops.get(op)
        if fn is None:
            raise SimError(f"Unknown control operation: {op}", status=404, code="resource_missing", param="op")
        body = request.get_json(silent=True) if request.data else {}
        if not isinstance(body, dict):
            raise SimError("The body must be a JSON object", param="body")
        try:
            result = fn(**body)
        except TypeError as exc:
            raise SimError(f"Bad arguments for {op}: {exc}", param="body") from None
        return json_response(result)

    @app.get("/_sim/<op>")
    def control_read(op: str) -> Response:
        if op not in READ_ONLY_OPS:
            raise SimError(f"Use POST for /_sim/{op}", status=405)
        args = dict(request.args.items())
        return json_response(ops[op](**args))

    @app.get("/_sim")
    def control_index() -> Response:
        return json_response({"operations": sorted(ops), "read_only": sorted(READ_ONLY_OPS)})


READ_ONLY_OPS = (
    frozenset({"truth", "settings", "clock", "stats", "deliveries", "events", "accounts"}) | EVENT_READ_ONLY_OPS
)


def control_operations(sim: Simulator) -> dict[str, Callable[..., Any]]:
    """The ``/_sim/<op>`` table: op name -> callable taking the JSON body as keywords."""

    def flush(timeout: float = 10.0) -> JSON:
        ok = sim.flush(float(timeout))
        return {"flushed": ok, "stats": sim.delivery_stats()}

    def truth(include: Any = None, account: str | None = None) -> JSON:
        if include is None:
            return sim.truth(account=account)
        if isinstance(include, str):
            include = include.split(",")
        return sim.truth(include=include, account=account)

    def deliveries(event: str | None = None) -> JSON:
        return {"deliveries": sim.delivery.deliveries(event)}

    def events(type: str | None = None, account: str | None = None) -> JSON:
        return {"events": sim.all_events(type, account=account)}

    def accounts() -> JSON:
        return {"platform": sim.get_account(None), "accounts": sim.list_accounts(limit=100)["data"]}

    def advance(seconds: int = 0, days: float = 0, hours: float = 0) -> JSON:
        return sim.advance(int(seconds) + int(float(days) * 86400) + int(float(hours) * 3600))

    def reset_delivery_stats() -> JSON:
        sim.delivery.reset_counters()
        return sim.delivery_stats()

    ops: dict[str, Callable[..., Any]] = {
        "advance": advance,
        "advance_to": lambda ts: sim.advance_to(int(ts)),
        "clock": lambda: {"now": sim.now(), "next_due": sim.next_due()},
        "settings": sim.settings,
        "configure": sim.configure,
        "configure_delivery": sim.configure_delivery,
        "set_rate_limit": sim.set_rate_limit,
        "set_latency": sim.set_latency,
        "flush": flush,
        "stats": sim.delivery_stats,
        "reset_delivery_stats": reset_delivery_stats,
        "deliveries": deliveries,
        "events": events,
        "truth": truth,
        "create_price": sim.create_price,
        "create_customer": sim.create_customer,
        "update_customer": sim.update_customer,
        "delete_customer": sim.delete_customer,
        "fail_next_payments": sim.fail_next_payments,
        "attach_new_card": sim.attach_new_card,
        "create_subscription": sim.create_subscription,
        "cancel_subscription": sim.cancel_subscription,
        "uncancel_subscription": sim.uncancel_subscription,
        "update_subscription_metadata": sim.update_subscription_metadata,
        "pause_subscription": sim.pause_subscription,
        "resume_subscription": sim.resume_subscription,
        "pay_open_invoice": sim.pay_open_invoice,
        "create_checkout_session": sim.create_checkout_session,
        "complete_checkout_session": sim.complete_checkout_session,
        "checkout_async_payment": sim.checkout_async_payment,
        "expire_checkout_session": sim.expire_checkout_session,
        "bulk_create": sim.bulk_create,
        "update_subscription_items": sim.update_subscription_items,
        "create_account": sim.create_account,
        "deauthorize_account": sim.deauthorize_account,
        "accounts": accounts,
    }
    ops.update(extra_operations(sim))
    return ops


class _QuietHandler(WSGIRequestHandler):
    """Lets the app's ``Date`` (the simulated clock) stand alone, and logs nothing."""

    def send_response(self, code: int, message: str | None = None) -> None:
        self.send_response_only(code, message)
        self.send_header("Server", self.version_string())

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _DateOnlyHandler(_QuietHandler):
    """Like :class:`_QuietHandler` but logs requests."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        WSGIRequestHandler.log_request(self, code, size)


def make_sim_server(sim: Simulator, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> Any:
    """A threaded werkzeug server for ``sim`` (call ``serve_forever``)."""
    handler = _QuietHandler if quiet else _DateOnlyHandler
    return make_server(host, port, create_app(sim), threaded=True, request_handler=handler)


def start_in_thread(
    sim: Simulator | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    quiet: bool = True,
    **sim_kwargs: Any,
) -> tuple[str, Callable[[], None]]:
    """Serve ``sim`` (or a new ``Simulator(**sim_kwargs)``) on a free port in a daemon thread.

    Returns ``(base_url, shutdown)``; ``shutdown()`` stops the server (and
    closes the simulator's delivery thread if this call created the simulator).
    """
    owned = sim is None
    the_sim = Simulator(**sim_kwargs) if sim is None else sim
    server = make_sim_server(the_sim, host, port, quiet)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripesim-http", daemon=True
    )
    thread.start()
    base_url = f"http://{host}:{server.server_port}"
    done = threading.Event()

    def shutdown() -> None:
        if done.is_set():
            return
        done.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if owned:
            the_sim.close()

    return base_url, shutdown
