"""The project's Stripe simulator, served over HTTP for the product to call, and an endpoint for its deliveries."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import stripe
from werkzeug.serving import WSGIRequestHandler, make_server

from stripesim.server import start_in_thread
from stripesim.state import Simulator
from subsync import config
from subsync.stripe_api import StripeApi, make_api

SIM_KEY = "sk_test_sim"
DAY = 86400
# What the simulator signs its deliveries with, and delivery timings short enough for tests.
SIM_SECRET = "whsec_test_secret"
FAST_DELIVERY = {"retry_initial": 0.02, "retry_factor": 1.5, "reorder_hold": 0.05}


class _Quiet(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass


class Receiver:
    """A tiny webhook endpoint in a thread; ``plan(n, event_id)`` picks each answer's status."""

    def __init__(self, plan: Callable[[int, str], int] | None = None) -> None:
        self.plan = plan or (lambda n, event_id: 200)
        self.hits: list[dict] = []
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhooks/stripe"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    def _app(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
        event_id = json.loads(body)["id"]
        with self._lock:
            self.attempts[event_id] += 1
            status = self.plan(self.attempts[event_id], event_id)
            if status == 200:
                self.hits.append(
                    {
                        "body": body,
                        "signature": environ.get("HTTP_STRIPE_SIGNATURE"),
                        "content_type": environ.get("CONTENT_TYPE"),
                        "id": event_id,
                    }
                )
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [b'{"received": true}']

    @property
    def ids(self) -> list[str]:
        with self._lock:
            return [h["id"] for h in self.hits]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_simulator(**kwargs: Any) -> Iterator[tuple[Simulator, str]]:
    """A simulator whose clock starts 40 days ago (so a month can pass before now), served in a thread."""
    kwargs.setdefault("start", int(time.time()) - 40 * DAY)
    kwargs.setdefault("api_key", SIM_KEY)
    kwargs.setdefault("seed", 7)
    sim = Simulator(**kwargs)
    url, shutdown = start_in_thread(sim)
    try:
        yield sim, url
    finally:
        shutdown()
        sim.close()


def api_for(url: str, *, library_retries: bool = True) -> StripeApi:
    """The product's Stripe client pointed at the simulator; no pacing, no real sleeping.

    Without library retries a refused call fails at once (the library's own
    backoff sleeps for real).
    """
    settings = dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=url)
    api = make_api(settings, max_rps=0)
    api.sleep = lambda _s: None
    if not library_retries:
        api.client = stripe.StripeClient(SIM_KEY, base_addresses={"api": url})
    return api
