"""Live and test mode: one per simulator, chosen by the API key's prefix or said outright."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe
from sim import SIM_SECRET, Receiver

from stripesim import Simulator
from stripesim.server import start_in_thread

T0 = 1_735_689_600
DAY = 86400


def livemodes(obj: Any) -> set[bool]:
    """Every ``livemode`` value found anywhere inside ``obj``."""
    found: set[bool] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "livemode":
                found.add(value)
            else:
                found |= livemodes(value)
    elif isinstance(obj, list):
        for value in obj:
            found |= livemodes(value)
    return found


def populate(sim: Simulator) -> None:
    acct = sim.create_account()["id"]
    for account in (None, acct):
        cus = sim.create_customer(email="a@example.com", account=account)["id"]
        sim.create_subscription(cus, items=[{"price": "price_premium_monthly"}], account=account)
        cs = sim.create_checkout_session(mode="subscription", customer=cus, account=account)
        sim.complete_checkout_session(cs["id"], account=account)
    sim.advance(32 * DAY)


@pytest.mark.parametrize(
    ("key", "livemode", "expected"),
    [
        ("sk_live_sim", None, True),
        ("rk_live_sim", None, True),
        ("sk_test_sim", None, False),
        ("rk_test_sim", None, False),
        ("sk_test_sim", True, True),
        ("sk_live_sim", False, False),
    ],
)
def test_every_object_and_event_carries_the_mode(key, livemode, expected):
    sim = Simulator(start=T0, seed=3, api_key=key, livemode=livemode)
    populate(sim)
    truth = sim.truth(account="all")
    events = sim.all_events(account="all")
    assert truth["livemode"] is expected
    assert livemodes(truth["subscriptions"] + truth["invoices"] + truth["customers"]) == {expected}
    assert livemodes(events) == {expected}
    assert {e["livemode"] for e in events} == {expected}
    prefix = "cs_live_" if expected else "cs_test_"
    assert all(cs["id"].startswith(prefix) for cs in truth["checkout_sessions"])
    assert sim.settings()["livemode"] is expected
    sim.close()


def test_a_live_simulator_over_the_api():
    sim = Simulator(start=T0, seed=3, api_key="sk_live_sim")
    url, shutdown = start_in_thread(sim)
    try:
        client = stripe.StripeClient("sk_live_sim", base_addresses={"api": url}, max_network_retries=0)
        cus = sim.create_customer()["id"]
        sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": "price_premium_monthly"}]})
        assert sub.livemode is True
        assert sub["items"].data[0].price.livemode is True
        assert client.v1.invoices.retrieve(sub.latest_invoice).lines.data[0].livemode is True
        assert {e.livemode for e in client.v1.events.list().data} == {True}
        with pytest.raises(stripe.AuthenticationError):
            stripe.StripeClient("sk_test_sim", base_addresses={"api": url}).v1.customers.list()
    finally:
        shutdown()
        sim.close()


def test_two_simulators_one_per_mode_share_an_endpoint():
    receiver = Receiver()
    fast = {"retry_initial": 0.02}
    live = Simulator(
        start=T0, seed=1, api_key="sk_live_a", webhook_urls=[receiver.url], webhook_secret=SIM_SECRET, delivery=fast
    )
    test = Simulator(
        start=T0, seed=2, api_key="sk_test_b", webhook_urls=[receiver.url], webhook_secret=SIM_SECRET, delivery=fast
    )
    try:
        live.create_customer(email="live@example.com")
        test.create_customer(email="test@example.com")
        assert live.flush(10)
        assert test.flush(10)
        got = {json.loads(h["body"])["data"]["object"]["email"]: json.loads(h["body"]) for h in receiver.hits}
        assert got["live@example.com"]["livemode"] is True
        assert got["test@example.com"]["livemode"] is False
        for hit in receiver.hits:
            stripe.Webhook.construct_event(hit["body"], hit["signature"], SIM_SECRET)
    finally:
        live.close()
        test.close()
        receiver.close()
