"""The project's Stripe simulator, served over HTTP for the product to call."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stripe

from stripesim.server import start_in_thread
from stripesim.state import Simulator
from subsync import config
from subsync.stripe_api import StripeApi, make_api

SIM_KEY = "sk_test_sim"
DAY = 86400


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
