"""Webhook delivery of the Stripe simulator: signatures, retries and chaos."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter

import pytest
import stripe
from sim import FAST_DELIVERY, SIM_SECRET, Receiver

from stripesim import Simulator

T0 = 1_735_689_600
DAY = 86400


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def make_sim(urls: list[str], secret: str = SIM_SECRET, **delivery) -> Simulator:
    return Simulator(
        start=T0, seed=11, webhook_urls=urls, webhook_secret=secret, delivery={**FAST_DELIVERY, **delivery}
    )


def some_events(sim: Simulator, customers: int = 3) -> list[str]:
    for i in range(customers):
        cus = sim.create_customer(email=f"u{i}@example.com")["id"]
        sim.create_subscription(cus)
    return [e["id"] for e in sim.all_events()]


def test_deliveries_are_signed_with_the_wall_clock(receiver):
    sim = make_sim([receiver.url])
    emitted = some_events(sim, customers=2)
    assert sim.flush(5)
    assert receiver.ids == emitted  # no chaos: once each, in order
    for hit in receiver.hits:
        assert stripe.WebhookSignature.verify_header(hit["body"], hit["signature"], SIM_SECRET, tolerance=300)
        event = stripe.Webhook.construct_event(hit["body"], hit["signature"], SIM_SECRET)
        assert event.id == hit["id"]
        t = int(hit["signature"].split(",")[0].removeprefix("t="))
        assert abs(t - time.time()) < 10  # wall clock, not the simulated 2025 clock
        assert hit["content_type"].startswith("application/json")
        parsed = json.loads(hit["body"])
        assert hit["body"] == json.dumps(parsed, separators=(",", ":"))  # compact
        assert parsed["pending_webhooks"] == 1
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(receiver.hits[0]["body"], receiver.hits[0]["signature"], "whsec_other")
    stats = sim.delivery_stats()
    assert (stats["delivered"], stats["retried"], stats["failed"], stats["pending"]) == (len(emitted), 0, 0, 0)
    sim.close()


def test_rotation_signs_with_every_secret(receiver):
    sim = make_sim([receiver.url], secret="whsec_old,whsec_new")
    some_events(sim, customers=1)
    assert sim.flush(5)
    hit = receiver.hits[0]
    assert hit["signature"].count("v1=") == 2
    for secret in ("whsec_old", "whsec_new"):
        assert stripe.WebhookSignature.verify_header(hit["body"], hit["signature"], secret, tolerance=300)
    sim.close()


def test_duplicates_keep_the_event_id(receiver):
    sim = make_sim([receiver.url], duplicate_rate=1.0)
    emitted = some_events(sim)
    assert sim.flush(5)
    assert Counter(receiver.ids) == dict.fromkeys(emitted, 2)
    assert sim.delivery_stats()["duplicated"] == len(emitted)
    sim.close()


def test_resends_have_new_ids_and_the_same_data(receiver):
    sim = make_sim([receiver.url], resend_rate=1.0)
    sim.create_customer(email="r@example.com")
    events = sim.all_events()
    assert len(events) == 2
    original, again = events
    assert original["id"] != again["id"]
    assert original["type"] == again["type"] == "customer.created"
    assert original["data"] == again["data"]
    assert sim.flush(5)
    assert sorted(receiver.ids) == sorted([original["id"], again["id"]])
    assert sim.delivery_stats()["resent"] == 1
    sim.close()


def test_dropped_events_stay_listed(receiver):
    sim = make_sim([receiver.url], drop_rate=1.0)
    emitted = some_events(sim)
    assert sim.flush(5)
    assert receiver.ids == []
    assert sim.delivery_stats()["dropped"] == len(emitted)
    listed = [e["id"] for e in sim.list_events(limit=100)["data"]]
    assert sorted(listed) == sorted(emitted)
    sim.close()


def test_some_drops_are_reproducible(receiver):
    sim = make_sim([receiver.url], drop_rate=0.5)
    emitted = some_events(sim, customers=5)
    assert sim.flush(5)
    delivered = set(receiver.ids)
    assert 0 < len(delivered) < len(emitted)
    again = Receiver()
    twin = make_sim([again.url], drop_rate=0.5)
    twin_emitted = some_events(twin, customers=5)
    assert twin.flush(5)
    assert twin_emitted == emitted  # same seed: same ids
    assert set(again.ids) == delivered  # and the same chaos
    again.close()
    sim.close()
    twin.close()


def test_reorder_within_a_window(receiver):
    sim = make_sim([receiver.url], reorder_window=5)
    emitted = some_events(sim, customers=4)
    assert sim.flush(5)
    got = receiver.ids
    assert sorted(got) == sorted(emitted)
    assert got != emitted
    # nothing moves further than its window of 5
    for pos, ident in enumerate(got):
        assert pos // 5 == emitted.index(ident) // 5
    sim.close()


def test_retries_after_500_with_backoff():
    r = Receiver(plan=lambda n, event_id: 500 if n <= 2 else 200)
    sim = make_sim([r.url])
    emitted = some_events(sim, customers=1)
    assert sim.flush(5)
    assert sorted(r.ids) == sorted(emitted)  # one delivery each, each after two failures
    assert all(r.attempts[i] == 3 for i in emitted)
    stats = sim.delivery_stats()
    assert (stats["delivered"], stats["retried"], stats["failed"]) == (len(emitted), 2 * len(emitted), 0)
    log = sim.delivery.deliveries(emitted[0])
    assert [d["status"] for d in log] == [500, 500, 200]
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(log)]
    assert gaps[0] >= 0.018  # retry_initial 0.02
    assert gaps[1] >= 0.028  # then 0.03 (factor 1.5)
    r.close()
    sim.close()


def test_gives_up_after_max_attempts_and_on_connection_errors():
    r = Receiver(plan=lambda n, event_id: 503)
    sim = make_sim([r.url], max_attempts=3)
    sim.create_customer()
    assert sim.flush(5)
    stats = sim.delivery_stats()
    assert (stats["delivered"], stats["retried"], stats["failed"]) == (0, 2, 1)
    r.close()
    sim.configure_delivery(urls=[r.url])  # now a closed port
    sim.delivery.reset_counters()
    sim.create_customer()
    assert sim.flush(5)
    stats = sim.delivery_stats()
    assert (stats["delivered"], stats["retried"], stats["failed"]) == (0, 2, 1)
    assert sim.delivery.deliveries()[0]["error"] is not None
    sim.close()


def test_delay_and_pause(receiver):
    sim = make_sim([receiver.url], delay=0.3)
    sim.create_customer()
    time.sleep(0.1)
    assert receiver.ids == []
    assert sim.flush(5)
    assert len(receiver.ids) == 1
    sim.configure_delivery(delay=0, paused=True)
    sim.create_customer()
    assert not sim.flush(0.2)
    sim.configure_delivery(paused=False)
    assert sim.flush(5)
    assert len(receiver.ids) == 2
    sim.close()


def test_several_endpoints(receiver):
    other = Receiver()
    sim = make_sim([receiver.url, other.url])
    emitted = some_events(sim, customers=1)
    assert sim.flush(5)
    assert receiver.ids == other.ids == emitted
    assert sim.all_events()[0]["pending_webhooks"] == 2
    other.close()
    sim.close()


def test_renewal_webhooks_arrive_for_simulated_time(receiver):
    sim = make_sim([receiver.url])
    some_events(sim, customers=1)
    sim.advance(60 * DAY)
    assert sim.flush(5)
    types = [json.loads(h["body"])["type"] for h in receiver.hits]
    assert types.count("invoice.paid") == 3  # creation plus two renewals
    assert types.count("invoice.payment_succeeded") == 3
    sim.close()
