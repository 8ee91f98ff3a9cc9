"""The HTTP face of the simulator: a Stripe-like ``/v1`` API and ``/_sim`` control endpoints.

Every response carries ``Date`` set to the SIMULATED clock (RFC 1123) and a
``Request-Id``. ``/v1`` requests need ``Authorization: Bearer <api_key>`` (or
HTTP basic with the key as user name); injected rate limiting answers 429
with ``Stripe-Should-Retry: true``. ``/_sim`` needs no key.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server

from .model import SimError
from .state import Simulator

JSON = dict[str, Any]
_BRACKET = re.compile(r"^([A-Za-z0-9_]+)\[([A-Za-z0-9_]*)\](.*)$")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json")


def _error(err: SimError) -> Response:
    resp = _json(err.body(), err.status)
    if err.status == 429:
        resp.headers["Stripe-Should-Retry"] = "true"
    return resp


def parse_params(pairs: list[tuple[str, list[str]]]) -> JSON:
    """Decode Stripe's bracket encoding: ``types[0]=a``, ``types[]=a``, ``created[gte]=1``, ``metadata[k]=v``."""
    out: JSON = {}
    for key, values in pairs:
        m = _BRACKET.match(key)
        if not m:
            out[key] = values[-1]
            continue
        name, inner, rest = m.groups()
        if inner == "" or inner.isdigit():
            out.setdefault(name, []).extend(values)
        elif rest:
            out.setdefault(name, {})[inner] = values[-1]  # deeper nesting: keep one level
        else:
            out.setdefault(name, {})[inner] = values[-1]
    return out


def _int(params: JSON, name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SimError(f"Invalid integer: {value}", code="parameter_invalid_integer", param=name) from None


def _created(params: JSON) -> dict[str, int] | None:
    value = params.get("created")
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return {k: int(v) for k, v in value.items()}
        except ValueError:
            raise SimError("Invalid integer in created", param="created") from None
    try:
        return {"eq": int(value)}
    except (TypeError, ValueError):
        raise SimError(f"Invalid integer: {value}", param="created") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("true", "1", "yes")


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


def _redact(key: str) -> str:
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "*" * len(key)


class _Expander:
    """``expand[]=latest_invoice`` and friends: replace an id by its object."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def fetch(self, ident: str) -> JSON | None:
        getters: list[tuple[str, Callable[[str], JSON]]] = [
            ("sub_", self.sim.get_subscription),
            ("in_", self.sim.get_invoice),
            ("cus_", self.sim.get_customer),
            ("cs_", self.sim.get_checkout_session),
            ("price_", self.sim.get_price),
        ]
        for prefix, get in getters:
            if ident.startswith(prefix):
                try:
                    return get(ident)
                except SimError:
                    return None
        return None

    def apply(self, obj: JSON, paths: list[str]) -> JSON:
        for path in paths:
            self._apply_path(obj, path.split("."))
        return obj

    def _apply_path(self, obj: Any, parts: list[str]) -> None:
        if not parts or not isinstance(obj, dict):
            return
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(obj.get("data"), list):
            for item in obj["data"]:
                self._apply_path(item, rest)
            return
        value = obj.get(head)
        if isinstance(value, str) and not rest:
            full = self.fetch(value)
            if full is not None:
                obj[head] = full
        elif isinstance(value, dict):
            self._apply_path(value, rest)


def create_app(sim: Simulator) -> Flask:
    """The Flask app serving ``sim``."""
    app = Flask("stripesim")
    expander = _Expander(sim)

    @app.before_request
    def _auth_and_limits() -> Response | None:
        if not request.path.startswith("/v1/"):
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
            return _error(SimError(f"Invalid API Key provided: {_redact(key)}", status=401))
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
        return _json({"error": {"type": "invalid_request_error", "message": msg}}, status)

    _register_api(app, sim, expander)
    _register_control(app, sim)
    return app


def _params() -> JSON:
    pairs = list(request.args.lists())
    if request.method in ("POST", "DELETE") and request.form:
        pairs += list(request.form.lists())
    return parse_params(pairs)


def _register_api(app: Flask, sim: Simulator, expander: _Expander) -> None:
    params = _params

    def expanded(obj: JSON, p: JSON) -> Response:
        paths = p.get("expand") or []
        if isinstance(paths, str):
            paths = [paths]
        return _json(expander.apply(obj, paths) if paths else obj)

    @app.get("/v1/subscriptions")
    def list_subscriptions() -> Response:
        p = params()
        out = sim.list_subscriptions(
            status=p.get("status"),
            customer=p.get("customer"),
            price=p.get("price"),
            limit=_int(p, "limit"),
            starting_after=p.get("starting_after") or None,
            ending_before=p.get("ending_before") or None,
            created=_created(p),
        )
        return expanded(out, p)

    @app.get("/v1/subscriptions/<ident>")
    def get_subscription(ident: str) -> Response:
        return expanded(sim.get_subscription(ident), params())

    @app.post("/v1/subscriptions/<ident>")
    def update_subscription(ident: str) -> Response:
        p = params()
        current = sim.get_subscription(ident)
        if "cancel_at_period_end" in p:
            wanted = _bool(p["cancel_at_period_end"])
            if wanted and not current["cancel_at_period_end"]:
                sim.cancel_subscription(ident, at_period_end=True)
            elif not wanted and current["cancel_at_period_end"]:
                sim.uncancel_subscription(ident)
        if isinstance(p.get("metadata"), dict):
            sim.update_subscription_metadata(ident, p["metadata"])
        return expanded(sim.get_subscription(ident), p)

    @app.delete("/v1/subscriptions/<ident>")
    def cancel_subscription(ident: str) -> Response:
        sim.get_subscription(ident)
        return expanded(sim.cancel_subscription(ident), params())

    @app.get("/v1/invoices")
    def list_invoices() -> Response:
        p = params()
        out = sim.list_invoices(
            subscription=p.get("subscription"),
            customer=p.get("customer"),
            status=p.get("status"),
            limit=_int(p, "limit"),
            starting_after=p.get("starting_after") or None,
            ending_before=p.get("ending_before") or None,
        )
        return expanded(out, p)

    @app.get("/v1/invoices/<ident>")
    def get_invoice(ident: str) -> Response:
        return expanded(sim.get_invoice(ident), params())

    @app.get("/v1/customers")
    def list_customers() -> Response:
        p = params()
        out = sim.list_customers(
            email=p.get("email"),
            limit=_int(p, "limit"),
            starting_after=p.get("starting_after") or None,
            ending_before=p.get("ending_before") or None,
        )
        return _json(out)

    @app.get("/v1/customers/<ident>")
    def get_customer(ident: str) -> Response:
        return _json(sim.get_customer(ident))

    @app.get("/v1/checkout/sessions/<ident>")
    def get_checkout_session(ident: str) -> Response:
        return expanded(sim.get_checkout_session(ident), params())

    @app.get("/v1/prices/<ident>")
    def get_price(ident: str) -> Response:
        return _json(sim.get_price(ident))

    @app.get("/v1/events")
    def list_events() -> Response:
        p = params()
        types = p.get("types")
        if isinstance(types, str):
            types = [types]
        out = sim.list_events(
            type=p.get("type"),
            types=types,
            created=_created(p),
            limit=_int(p, "limit"),
            starting_after=p.get("starting_after") or None,
            ending_before=p.get("ending_before") or None,
        )
        return _json(out)

    @app.get("/v1/events/<ident>")
    def get_event(ident: str) -> Response:
        return _json(sim.get_event(ident))


def _register_control(app: Flask, sim: Simulator) -> None:
    ops = control_operations(sim)

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
        return _json(result)

    @app.get("/_sim/<op>")
    def control_read(op: str) -> Response:
        if op not in READ_ONLY_OPS:
            raise SimError(f"Use POST for /_sim/{op}", status=405)
        args = dict(request.args.items())
        return _json(ops[op](**args))

    @app.get("/_sim")
    def control_index() -> Response:
        return _json({"operations": sorted(ops), "read_only": sorted(READ_ONLY_OPS)})


READ_ONLY_OPS = frozenset({"truth", "settings", "clock", "stats", "deliveries", "events"})


def control_operations(sim: Simulator) -> dict[str, Callable[..., Any]]:
    """The ``/_sim/<op>`` table: op name -> callable taking the JSON body as keywords."""

    def flush(timeout: float = 10.0) -> JSON:
        ok = sim.flush(float(timeout))
        return {"flushed": ok, "stats": sim.delivery_stats()}

    def truth(include: Any = None) -> JSON:
        if include is None:
            return sim.truth()
        if isinstance(include, str):
            include = include.split(",")
        return sim.truth(include=include)

    def deliveries(event: str | None = None) -> JSON:
        return {"deliveries": sim.delivery.deliveries(event)}

    def events(type: str | None = None) -> JSON:
        return {"events": sim.all_events(type)}

    def advance(seconds: int = 0, days: float = 0, hours: float = 0) -> JSON:
        return sim.advance(int(seconds) + int(float(days) * 86400) + int(float(hours) * 3600))

    def reset_delivery_stats() -> JSON:
        sim.delivery.reset_counters()
        return sim.delivery_stats()

    return {
        "advance": advance,
        "advance_to": lambda ts: sim.advance_to(int(ts)),
        "clock": lambda: {"now": sim.now(), "next_due": sim.next_due()},
        "settings": sim.settings,
        "configure": sim.configure,
        "configure_delivery": sim.configure_delivery,
        "set_rate_limit": sim.set_rate_limit,
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
    }


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
