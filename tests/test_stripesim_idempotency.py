"""Idempotent requests against the simulator, through the stripe library and plain HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import stripe

from stripesim import Simulator, start_in_thread
from stripesim.idempotency import IdempotencyStore

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
HOUR = 3600
KEY = "sk_test_sim"


@pytest.fixture
def served():
    sim = Simulator(start=T0, seed=4, api_key=KEY)
    url, shutdown = start_in_thread(sim)
    client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    yield sim, client, url
    shutdown()
    sim.close()


def post(url: str, path: str, data: dict, key: str, account: str | None = None) -> requests.Response:
    headers = {"Idempotency-Key": key}
    if account:
        headers["Stripe-Account"] = account
    return requests.post(f"{url}{path}", data=data, headers=headers, auth=(KEY, ""), timeout=5)


def test_the_same_key_replays_the_first_response(served):
    sim, client, url = served
    cus = sim.create_customer()["id"]
    body = {"customer": cus, "items[0][price]": "price_premium_monthly", "trial_end": "now"}
    first = post(url, "/v1/subscriptions", body, "reactivate-1")
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    events = len(sim.all_events())
    again = post(url, "/v1/subscriptions", body, "reactivate-1")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len(sim.all_events()) == events  # nothing ran twice
    assert [s["id"] for s in sim.list_subscriptions(customer=cus)["data"]] == [first.json()["id"]]
    created = sim.all_events(type="customer.subscription.created")[-1]
    assert created["request"]["idempotency_key"] == "reactivate-1"
    ids = {client.v1.invoice_items.create({"customer": cus, "amount": 100}, {"idempotency_key": "ii-1"}).id}
    ids.add(client.v1.invoice_items.create({"customer": cus, "amount": 100}, {"idempotency_key": "ii-1"}).id)
    assert len(ids) == 1
    assert len(sim.list_invoice_items(customer=cus)["data"]) == 1


def test_the_same_key_with_other_parameters_is_refused(served):
    sim, client, _ = served
    cus = sim.create_customer()["id"]
    client.v1.invoice_items.create({"customer": cus, "amount": 100}, {"idempotency_key": "k"})
    with pytest.raises(stripe.IdempotencyError) as err:
        client.v1.invoice_items.create({"customer": cus, "amount": 200}, {"idempotency_key": "k"})
    assert err.value.http_status == 400
    assert err.value.user_message == (
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        "Try using a key other than 'k' if you meant to execute a different request."
    )
    with pytest.raises(stripe.IdempotencyError):  # another endpoint is other parameters too
        client.v1.refunds.create({"charge": "ch_x"}, {"idempotency_key": "k"})


def test_errors_are_replayed_but_refused_parameters_are_not_kept(served):
    sim, _, url = served
    missing = post(url, "/v1/invoiceitems", {"customer": "cus_nobody", "amount": "100"}, "e1")
    assert missing.status_code == 404
    sim.create_customer(id="cus_nobody")
    again = post(url, "/v1/invoiceitems", {"customer": "cus_nobody", "amount": "100"}, "e1")
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (404, "true")  # as Stripe: errors too
    refused = post(url, "/v1/invoiceitems", {"customer": "cus_nobody"}, "e2")
    assert refused.json()["error"]["code"] == "parameter_missing"
    fixed = post(url, "/v1/invoiceitems", {"customer": "cus_nobody", "amount": "100"}, "e2")
    assert fixed.status_code == 200  # the endpoint never ran the first time: the key was free
    assert "Idempotent-Replayed" not in fixed.headers


def test_keys_are_per_account_and_expire_after_a_day(served):
    sim, _, url = served
    acct = sim.create_account()["id"]
    mine = sim.create_customer(id="cus_same")["id"]
    sim.create_customer(id="cus_same", account=acct)
    a = post(url, "/v1/invoiceitems", {"customer": mine, "amount": "100"}, "shared")
    b = post(url, "/v1/invoiceitems", {"customer": mine, "amount": "100"}, "shared", account=acct)
    assert a.json()["id"] != b.json()["id"]
    assert "Idempotent-Replayed" not in b.headers
    sim.advance(24 * HOUR + 1)
    later = post(url, "/v1/invoiceitems", {"customer": mine, "amount": "300"}, "shared")
    assert (later.status_code, later.json()["amount"]) == (200, 300)


def test_a_key_in_use_over_http_is_a_409_then_the_first_answer_replayed(served):
    sim, _, url = served
    cus = sim.create_customer()["id"]
    body = {"customer": cus, "amount": "100"}
    sim.set_latency("/v1/invoiceitems", 1.0)  # the first request is still running while the others arrive
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, url, "/v1/invoiceitems", body, "slow")
        time.sleep(0.3)
        busy = post(url, "/v1/invoiceitems", body, "slow")
        other = post(url, "/v1/invoiceitems", {**body, "amount": "200"}, "slow")
        made = first.result()
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "idempotency_key_in_use")
    assert "Idempotent-Replayed" not in busy.headers
    assert (other.status_code, other.json()["error"]["type"]) == (400, "idempotency_error")
    assert made.status_code == 200
    again = post(url, "/v1/invoiceitems", body, "slow")
    assert (again.headers["Idempotent-Replayed"], again.json()) == ("true", made.json())
    assert len(sim.list_invoice_items(customer=cus)["data"]) == 1


def test_a_key_in_use_is_a_conflict():
    store = IdempotencyStore()
    assert store.begin((None, "k"), "same", T0) is None
    busy = store.begin((None, "k"), "same", T0)
    assert busy is not None
    assert busy.status_code == 409
    assert busy.get_json()["error"]["code"] == "idempotency_key_in_use"
    store.abandon((None, "k"))
    assert store.begin((None, "k"), "same", T0) is None
