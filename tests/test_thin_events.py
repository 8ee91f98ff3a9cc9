"""Thin events: received like any event, applied by fetching their object from Stripe, never lost.

Through the receiver, the worker's apply (with the product's Stripe client
pointed at the simulator) and real PostgreSQL.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from helpers import DAY, GRACE, event_row, post_event, queued_ids
from sim import api_for, running_simulator

from subsync import db
from worker.apply import apply_events


@pytest.fixture
def stripe_sim(conn, broker):
    with running_simulator(start=int(time.time()) - 20 * DAY) as (sim, url):
        yield sim, api_for(url, library_retries=False)


def apply(api, event_id):
    results = apply_events(db.pool(), [event_id], grace=GRACE, api=api)
    return results[0] if results else None


def thin_twin(sim, v1_type, account=None):
    event = next(e for e in reversed(sim.all_events(account=account)) if e["type"] == v1_type)
    return sim.thin_event_for(event["id"])


def test_a_thin_event_is_stored_once_with_its_time_account_and_object(client, conn, stripe_sim):
    sim, _ = stripe_sim
    account = sim.create_account()["id"]
    sim.create_subscription(sim.create_customer(email="t@example.com", account=account)["id"], account=account)
    thin = thin_twin(sim, "customer.subscription.created", account)
    first, again = post_event(client, thin), post_event(client, thin)
    assert (first.status_code, first.get_json()) == (200, {"received": True, "duplicate": False})
    assert again.get_json()["duplicate"] is True
    row = event_row(conn, thin["id"])
    assert (row["type"], row["account"], row["object_id"]) == (
        "v1.customer.subscription.created",
        account,
        thin["related_object"]["id"],
    )
    assert row["created_at"] == datetime.fromisoformat(thin["created"])
    assert row["status"] == "received"


def test_a_thin_subscription_event_applies_the_object_fetched_from_stripe(client, conn, stripe_sim):
    sim, api = stripe_sim
    account = sim.create_account()["id"]
    sub = sim.create_subscription(sim.create_customer(email="t@example.com", account=account)["id"], account=account)
    thin = thin_twin(sim, "customer.subscription.created", account)
    post_event(client, thin)
    assert apply(api, thin["id"]).status == "processed"
    row = conn.execute("SELECT * FROM subscriptions").fetchone()
    truth = sim.get_subscription(sub["id"], account=account)
    assert (row["id"], row["status"], row["account"]) == (sub["id"], truth["status"], account)
    # Its Stripe time is the API answer's, not the thin event's creation.
    assert row["stripe_updated_at"].timestamp() == sim.now()


def test_a_thin_invoice_paid_records_the_payment(client, conn, stripe_sim):
    sim, api = stripe_sim
    sim.create_subscription(sim.create_customer(email="p@example.com")["id"])
    thin = thin_twin(sim, "invoice.paid")
    post_event(client, thin)
    assert apply(api, thin["id"]).status == "processed"
    payment = conn.execute("SELECT status, amount, fact_key FROM payments").fetchone()
    assert (payment["status"], payment["amount"]) == ("COMPLETED", 2999)


def test_a_thin_event_of_a_type_we_do_not_handle_is_stored_and_ignored(client, conn, broker, stripe_sim):
    sim, api = stripe_sim
    account = sim.create_account()["id"]
    sim.deauthorize_account(account)
    thin = thin_twin(sim, "account.application.deauthorized", account)
    post_event(client, thin)
    preview = {**thin_twin(sim, "account.application.deauthorized", account), "id": "evt_thin_upcoming"}
    preview["type"] = "v1.invoice.upcoming"  # a forecast: nothing to fetch or store
    post_event(client, preview)
    for ignored in (thin, preview):
        assert event_row(conn, ignored["id"])["status"] == "ignored"
    assert queued_ids(broker) == []
    # One stored by an earlier version, queued: the worker ignores it.
    conn.execute("UPDATE stripe_events SET status = 'received' WHERE id = %s", (thin["id"],))
    assert apply(api, thin["id"]).status == "ignored"


def test_a_thin_event_that_cannot_be_fetched_fails_with_a_retry_and_is_applied_later(client, conn, stripe_sim):
    sim, api = stripe_sim
    sim.create_subscription(sim.create_customer(email="r@example.com")["id"])
    thin = thin_twin(sim, "customer.subscription.created")
    post_event(client, thin)
    sim.set_rate_limit(every=1)  # Stripe answers 429 to everything
    result = apply(api, thin["id"])
    assert (result.status, result.error_type) == ("failed", "RateLimitError")
    assert result.retry_in_ms is not None
    sim.set_rate_limit()
    assert apply(api, thin["id"]).status == "processed"
    assert conn.execute("SELECT count(*) AS n FROM subscriptions").fetchone()["n"] == 1


def test_without_an_api_key_a_thin_event_fails_and_waits_for_one(client, conn, stripe_sim):
    sim, _ = stripe_sim
    sim.create_subscription(sim.create_customer(email="k@example.com")["id"])
    thin = thin_twin(sim, "customer.subscription.created")
    post_event(client, thin)
    result = apply(None, thin["id"])
    assert (result.status, result.error_type) == ("failed", "ConfigError")
    assert "STRIPE_API_KEY" in event_row(conn, thin["id"])["last_error"]


def test_an_event_stripe_failed_to_generate_is_applied_from_its_health_event(client, conn, stripe_sim):
    sim, api = stripe_sim
    customer = sim.create_customer(email="h@example.com")["id"]
    sim.fail_event_generation("invoice.paid", n=1, resolve_after=None)
    sim.create_subscription(customer)
    assert not [e for e in sim.all_events() if e["type"] == "invoice.paid"]
    (health,) = sim.resolve_event_generation_failures()
    post_event(client, health)
    assert apply(api, health["id"]).status == "processed"
    invoice = conn.execute("SELECT status FROM invoices").fetchone()
    assert invoice["status"] == "paid"
    assert conn.execute("SELECT status FROM payments").fetchone()["status"] == "COMPLETED"


def test_a_thin_event_naming_no_v1_object_fails_for_good(client, conn, stripe_sim):
    sim, api = stripe_sim
    sim.create_subscription(sim.create_customer(email="x@example.com")["id"])
    thin = thin_twin(sim, "customer.subscription.created")
    thin = {**thin, "id": "evt_thin_forged", "related_object": {**thin["related_object"], "url": "https://elsewhere/x"}}
    post_event(client, thin)
    result = apply(api, thin["id"])
    assert (result.status, result.retry_in_ms) == ("failed", None)
