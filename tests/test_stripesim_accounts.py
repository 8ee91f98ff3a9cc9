"""Connected accounts in the simulator: objects per account, the Stripe-Account header, Connect events."""

from __future__ import annotations

import json

import pytest
import requests
import stripe
from sim import SIM_SECRET, Receiver

from stripesim import SimControl, SimError, Simulator
from stripesim.server import start_in_thread

# The payments' own events (payment_events) are off in these tests: they pin the
# sequences of subscriptions' and invoices' events, which Stripe interleaves with them.
T0 = 1_735_689_600
DAY = 86400
KEY = "sk_test_51Sim0000000000000000000000000000abcd"


@pytest.fixture
def served():
    sim = Simulator(payment_events=False, start=T0, seed=9, api_key=KEY)
    url, shutdown = start_in_thread(sim)
    yield sim, url, stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    shutdown()
    sim.close()


def as_account(acct: str) -> dict:
    return {"stripe_account": acct}


def test_each_account_sees_only_its_own_objects(served):
    sim, _, client = served
    shop = sim.create_account(business_name="Shop", email="shop@example.com")
    assert shop["id"].startswith("acct_")
    assert (shop["object"], shop["type"], shop["charges_enabled"]) == ("account", "standard", True)
    acct = shop["id"]
    mine = sim.create_customer(email="p@example.com")["id"]
    platform_sub = sim.create_subscription(mine)["id"]
    cus = sim.create_customer(email="c@example.com", account=acct)["id"]
    sub = sim.create_subscription(cus, account=acct)["id"]

    got = client.v1.subscriptions.retrieve(sub, options=as_account(acct))
    assert (got.id, got.customer, got.status) == (sub, cus, "active")
    inv = client.v1.invoices.retrieve(got.latest_invoice, options=as_account(acct))
    assert inv.account_name == "Shop"
    # asked without the header, a connected account's subscription does not exist
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.retrieve(sub)
    assert err.value.http_status == 404
    assert err.value.json_body["error"] == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": f"No such subscription: '{sub}'",
        "param": "id",
    }
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.retrieve(platform_sub, options=as_account(acct))
    assert [s.id for s in client.v1.subscriptions.list().data] == [platform_sub]
    assert [s.id for s in client.v1.subscriptions.list(options=as_account(acct)).data] == [sub]
    assert [c.id for c in client.v1.customers.list(options=as_account(acct)).data] == [cus]
    assert [i.id for i in client.v1.invoices.list(options=as_account(acct)).data] == [got.latest_invoice]
    expanded = client.v1.subscriptions.retrieve(sub, {"expand": ["latest_invoice"]}, options=as_account(acct))
    assert expanded.latest_invoice.id == got.latest_invoice
    # the platform's own id in the header is the platform
    own = sim.settings()["platform_account"]
    assert [s.id for s in client.v1.subscriptions.list(options=as_account(own)).data] == [platform_sub]


def test_events_are_per_account_and_carry_it(served):
    sim, _, client = served
    acct = sim.create_account()["id"]
    cus = sim.create_customer(account=acct)["id"]
    sub = sim.create_subscription(cus, account=acct)["id"]
    sim.create_customer(email="platform@example.com")
    sim.advance(31 * DAY + 3600)  # the connected subscription renews by the clock
    connected = sim.all_events(account=acct)
    assert [e["type"] for e in connected][-5:] == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    assert {e["account"] for e in connected} == {acct}
    assert connected[-1]["request"]["id"] is None  # from the clock
    assert [e["type"] for e in sim.all_events()] == ["customer.created"]
    assert "account" not in sim.all_events()[0]
    listed = client.v1.events.list({"limit": 100}, options=as_account(acct))
    assert [e.id for e in listed.data] == [e["id"] for e in reversed(connected[-5:])]  # the last 30 days
    assert listed.data[0].account == acct
    assert client.v1.events.retrieve(connected[-1]["id"], options=as_account(acct)).type == "invoice.payment_succeeded"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve(connected[-1]["id"])
    assert client.v1.events.list().data == []  # the platform's one event is older than 30 days
    every = sim.all_events(account="all")
    assert len(every) == len(connected) + 1
    assert [e["created"] for e in every] == sorted(e["created"] for e in every)
    assert client.v1.subscriptions.retrieve(sub, options=as_account(acct))["items"].data[0].current_period_start == (
        T0 + 31 * DAY
    )


def test_an_unknown_or_revoked_account_is_refused_as_stripe_does(served):
    sim, url, client = served
    with pytest.raises(stripe.PermissionError) as err:
        client.v1.subscriptions.list(options=as_account("acct_1NoSuchAccount00"))
    assert err.value.http_status == 403
    assert err.value.json_body["error"]["code"] == "account_invalid"
    assert err.value.json_body["error"] == {
        "type": "invalid_request_error",
        "code": "account_invalid",
        "doc_url": "https://stripe.com/docs/error-codes/account-invalid",
        "message": "The provided key 'sk_test_*********************************abcd' does not have access to "
        "account 'acct_1NoSuchAccount00' (or that account does not exist). Application access may have been revoked.",
    }
    with pytest.raises(stripe.PermissionError):
        client.v1.accounts.retrieve("acct_1NoSuchAccount00")

    acct = sim.create_account()["id"]
    cus = sim.create_customer(account=acct)["id"]
    sim.create_subscription(cus, account=acct)
    assert [a.id for a in client.v1.accounts.list().data] == [acct]
    mark = len(sim.all_events(account=acct))
    sim.deauthorize_account(acct)
    [gone] = sim.all_events(account=acct)[mark:]
    assert (gone["type"], gone["account"], gone["data"]["object"]["object"]) == (
        "account.application.deauthorized",
        acct,
        "application",
    )
    with pytest.raises(stripe.PermissionError) as err:
        client.v1.subscriptions.list(options=as_account(acct))
    assert err.value.json_body["error"]["code"] == "account_invalid"
    assert client.v1.accounts.list().data == []
    # the account lives on without the platform: its renewal happens, undelivered
    sim.advance(32 * DAY)
    later = sim.all_events(account=acct)[mark + 1 :]
    assert later
    assert {e["pending_webhooks"] for e in later} == {0}
    resp = requests.get(f"{url}/v1/subscriptions", auth=(KEY, ""), headers={"Stripe-Account": acct}, timeout=5)
    assert resp.status_code == 403


def test_connected_events_reach_the_same_endpoints_signed_with_the_same_secret():
    receiver = Receiver()
    sim = Simulator(
        payment_events=False,
        start=T0,
        seed=4,
        webhook_urls=[receiver.url],
        webhook_secret=SIM_SECRET,
        delivery={"retry_initial": 0.02},
    )
    try:
        acct = sim.create_account()["id"]
        sim.create_customer(email="platform@example.com")
        sim.create_customer(email="connected@example.com", account=acct)
        assert sim.flush(10)
        assert len(receiver.hits) == 2
        for hit in receiver.hits:
            event = stripe.Webhook.construct_event(hit["body"], hit["signature"], SIM_SECRET)
            assert event.type == "customer.created"
        by_email = {json.loads(h["body"])["data"]["object"]["email"]: json.loads(h["body"]) for h in receiver.hits}
        assert by_email["connected@example.com"]["account"] == acct
        assert "account" not in by_email["platform@example.com"]
        assert by_email["connected@example.com"]["pending_webhooks"] == 1
    finally:
        sim.close()
        receiver.close()


def test_accounts_over_the_api_and_the_control_endpoints(served):
    sim, url, client = served
    made = client.v1.accounts.create({"type": "express", "country": "fr", "business_profile": {"name": "Atelier"}})
    assert (made.type, made.country, made.business_profile.name) == ("express", "FR", "Atelier")
    assert made.controller.type == "application"
    assert client.v1.accounts.retrieve(made.id).id == made.id
    assert client.v1.accounts.retrieve_current(options=as_account(made.id)).id == made.id
    platform = client.v1.accounts.retrieve_current()
    assert platform.id == sim.settings()["platform_account"]
    assert platform.id != made.id

    ctl = SimControl(url, api_key=KEY)
    second = ctl.create_account(id="acct_1FixedForTests0", business_name="Second")["id"]
    assert second == "acct_1FixedForTests0"
    assert [a["id"] for a in ctl.accounts()["accounts"]] == [second, made.id]
    cus = ctl.create_customer(email="x@example.com", account=second)["id"]
    sub = ctl.create_subscription(cus, items=[{"price": "price_premium_monthly"}], account=second)
    ctl.fail_next_payments(cus, until_new_card=True, account=second)
    ctl.advance(days=32)
    assert sim.get_subscription(sub["id"], account=second)["status"] == "past_due"
    assert ctl.pay_open_invoice(sub["id"], account=second)["status"] == "paid"
    ctl.update_subscription_metadata(sub["id"], {"k": "v"}, account=second)
    ctl.cancel(sub["id"], account=second)
    assert [e["type"] for e in ctl.events("customer.subscription.*", account=second)][-1] == (
        "customer.subscription.deleted"
    )
    scoped = ctl.stripe_client(stripe_account=second)
    assert scoped.v1.subscriptions.retrieve(sub["id"]).status == "canceled"
    with pytest.raises(Exception, match="does not have access to account"):
        ctl.create_customer(account="acct_nope")
    ctl.close()


def test_truth_of_every_account(served):
    sim, url, _ = served
    acct = sim.create_account()["id"]
    mine = sim.create_subscription(sim.create_customer()["id"])["id"]
    theirs = sim.create_subscription(sim.create_customer(account=acct)["id"], account=acct)["id"]
    assert [s["id"] for s in sim.truth()["subscriptions"]] == [mine]
    assert [s["id"] for s in sim.truth(account=acct)["subscriptions"]] == [theirs]
    every = sim.truth(account="all")
    assert [(s["id"], s["account"]) for s in every["subscriptions"]] == [(mine, None), (theirs, acct)]
    assert {i["account"] for i in every["invoices"]} == {None, acct}
    assert (every["platform"], every["accounts"], every["livemode"]) == (
        sim.settings()["platform_account"],
        [acct],
        False,
    )
    over_http = SimControl(url).truth(include=["subscriptions"], account="all")
    assert [s["account"] for s in over_http["subscriptions"]] == [None, acct]
    got = requests.get(f"{url}/_sim/truth", params={"account": acct}, timeout=5).json()
    assert [s["id"] for s in got["subscriptions"]] == [theirs]


def test_account_operations_are_checked(served):
    sim, _, _ = served
    with pytest.raises(SimError) as err:
        sim.create_customer(account="acct_missing")
    assert (err.value.status, err.value.code) == (403, "account_invalid")
    sim.create_account(id="acct_1Twice000000000")
    with pytest.raises(SimError, match="already exists"):
        sim.create_account(id="acct_1Twice000000000")
    with pytest.raises(SimError, match="type"):
        sim.create_account(type="unknown")
    with pytest.raises(SimError, match="cannot deauthorize itself"):
        sim.deauthorize_account(sim.settings()["platform_account"])
    price = sim.create_price(unit_amount=700, interval="day", id="price_daily", account="acct_1Twice000000000")
    assert price["id"] == "price_daily"
    with pytest.raises(SimError, match="No such price"):
        sim.get_price("price_daily")
