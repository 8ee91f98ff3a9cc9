"""A stand-in for Stripe's API, answering what stripe-sync-engine fetches while it applies events.

    python -m bench.peer.stripe_stub --port P --events FILE

It knows the objects of the events in FILE (one event a line): every nested
object with an `id` and an `object`, the last one seen for an id winning.
GET /v1/<resource>/<id> answers that object; a checkout session's
`line_items` is one item made from the session (its subscription's price, or
a one-time price it then answers too), as Stripe lists a checkout's lines;
`subscription_items?subscription=` and `invoices/<id>/lines` list the
object's embedded lists. Anything else is a 404 in Stripe's error shape.
GET /__stats counts the requests by kind.

It stands for Stripe's servers: the benches read its CPU beside the peer's,
not in it, as the product's worker fetches nothing while it applies.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class Objects:
    """The objects of a set of events, by id."""

    def __init__(self, bodies: Iterable[str]) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        for body in bodies:
            event = json.loads(body)
            self._index(event.get("data", {}).get("object"))

    def _index(self, value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("id"), str) and isinstance(value.get("object"), str):
                self.by_id[value["id"]] = value
            for child in value.values():
                self._index(child)
        elif isinstance(value, list):
            for child in value:
                self._index(child)

    def line_items(self, session_id: str) -> list[dict[str, Any]]:
        session = self.by_id.get(session_id)
        if session is None:
            return []
        price = self._subscription_price(session.get("subscription")) or self._one_time_price(session)
        amount = session.get("amount_total") or 0
        return [
            {
                "id": f"li_{session_id[-24:]}",
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": session.get("amount_subtotal") or amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": session.get("currency") or "usd",
                "description": price.get("nickname") or "Bench item",
                "price": price,
                "quantity": 1,
            }
        ]

    def _subscription_price(self, sub_id: Any) -> dict[str, Any] | None:
        sub = self.by_id.get(sub_id) if isinstance(sub_id, str) else None
        items = ((sub or {}).get("items") or {}).get("data") or []
        price = items[0].get("price") if items else None
        return price if isinstance(price, dict) else None

    def _one_time_price(self, session: dict[str, Any]) -> dict[str, Any]:
        price_id = f"price_{session['id'][-24:]}"
        price = {
            "id": price_id,
            "object": "price",
            "active": False,
            "billing_scheme": "per_unit",
            "created": session.get("created"),
            "currency": session.get("currency") or "usd",
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": "prod_bench_one_time",
            "recurring": None,
            "type": "one_time",
            "unit_amount": session.get("amount_total") or 0,
        }
        self.by_id.setdefault(price_id, price)  # it fetches the price it does not have
        return price


def listing(url: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "url": url}


def make_handler(objects: Objects, stats: Counter[str], lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            if parts == ["__stats"]:
                with lock:
                    self._send(200, dict(stats))
                return
            kind, body = self._route(parts, parse_qs(url.query), url.path)
            with lock:
                stats[kind] += 1
            if body is None:
                self._send(404, {"error": {"type": "invalid_request_error", "message": f"No such object: {url.path}"}})
            else:
                self._send(200, body)

        def _route(self, parts: list[str], query: dict[str, list[str]], path: str) -> tuple[str, Any]:
            if parts[:3] == ["v1", "checkout", "sessions"] and parts[4:] == ["line_items"]:
                return "checkout.session line_items", listing(path, objects.line_items(parts[3]))
            if parts == ["v1", "subscription_items"]:
                sub = objects.by_id.get(query.get("subscription", [""])[0]) or {}
                return "subscription_items", listing(path, (sub.get("items") or {}).get("data") or [])
            if len(parts) == 4 and parts[0] == "v1" and parts[1] == "invoices" and parts[3] == "lines":
                invoice = objects.by_id.get(parts[2]) or {}
                return "invoice lines", listing(path, (invoice.get("lines") or {}).get("data") or [])
            if len(parts) >= 3 and parts[0] == "v1":
                obj = objects.by_id.get(parts[-1])
                return (f"retrieve {obj['object']}" if obj else "unknown"), obj
            return "unknown", None

        def _send(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("Request-Id", "req_bench")
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the bench reads /__stats."""

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", required=True, help="a file of Stripe events, one JSON object a line")
    args = parser.parse_args(argv)
    with open(args.events) as f:
        objects = Objects(line for line in f if line.strip())
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(objects, Counter(), threading.Lock()))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
