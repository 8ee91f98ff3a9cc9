"""Invoices in the simulator: list filters, changes by hand, lost invoice events, plan changes."""

from __future__ import annotations

import json

import pytest
import stripe
from sim import FAST_DELIVERY, SIM_SECRET, Receiver

from stripesim import SimControl, SimError, Simulator
from stripesim.server import start_in_thread

# The payments' own events (payment_events) are off in these tests: they pin the
# sequences of subscriptions' and invoices' events, which Stripe interleaves with them.
T0 = 1_735_689_600  # 2025-01-01
DAY = 86400
KEY = "sk_test_sim"


@pytest.fixture
def served():
    sim = Simulator(payment_events=False, start=T0, seed=8, api_key=KEY)
    url, stop = start_in_thread(sim)
    yield sim, url, stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    stop()
    sim.close()


def ids(page) -> list[str]:
    return [o.id for o in page.data]


def test_list_invoices_filters_and_cursors(served):
    sim, _, client = served
    a = sim.create_customer()["id"]
    b = sim.create_customer()["id"]
    sub_a = sim.create_subscription(a)["id"]
    sim.advance(DAY)
    sub_b = sim.create_subscription(b)["id"]
    sim.advance(60 * DAY)  # two renewals each
    every = sim.truth(["invoices"])["invoices"]
    newest_first = [i["id"] for i in reversed(every)]
    assert ids(client.v1.invoices.list({"limit": 100})) == newest_first
    assert ids(client.v1.invoices.list({"subscription": sub_a})) == [
        i["id"] for i in reversed(every) if i["parent"]["subscription_details"]["subscription"] == sub_a
    ]
    assert ids(client.v1.invoices.list({"customer": b})) == [i["id"] for i in reversed(every) if i["customer"] == b]
    since = T0 + 30 * DAY
    recent = client.v1.invoices.list({"created": {"gte": since}, "limit": 100})
    assert ids(recent) == [i["id"] for i in reversed(every) if i["created"] >= since]
    window = client.v1.invoices.list({"created": {"gt": T0, "lt": T0 + 33 * DAY}, "subscription": sub_b})
    assert [o.billing_reason for o in window.data] == ["subscription_cycle", "subscription_create"]
    assert ids(client.v1.invoices.list({"created": {"lte": T0}})) == [every[0]["id"]]
    assert ids(client.v1.invoices.list({"status": "paid", "limit": 100})) == newest_first
    assert client.v1.invoices.list({"status": "open"}).data == []

    first = client.v1.invoices.list({"limit": 2})
    assert first.has_more
    second = client.v1.invoices.list({"limit": 2, "starting_after": first.data[-1].id})
    assert ids(second) == newest_first[2:4]
    back = client.v1.invoices.list({"limit": 2, "ending_before": second.data[0].id})
    assert ids(back) == newest_first[:2]
    walked = [o.id for o in client.v1.invoices.list({"limit": 2}).auto_paging_iter()]
    assert walked == newest_first
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.invoices.list({"status": "settled"})
    assert err.value.param == "status"

    acct = sim.create_account()["id"]
    sim.create_subscription(sim.create_customer(account=acct)["id"], account=acct)
    theirs = client.v1.invoices.list(options={"stripe_account": acct})
    assert len(theirs.data) == 1
    assert theirs.data[0].id not in newest_first


def test_finalize_void_and_mark_uncollectible_by_hand(served):
    sim, _, client = served
    sim.configure(finalize_delay=6 * 3600)
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(cus)["id"]
    sim.advance(31 * DAY)  # renewal drafted, not yet finalized
    draft = sim.get_subscription(sub)["latest_invoice"]
    assert sim.get_invoice(draft)["status"] == "draft"
    before = len(sim.all_events())
    got = client.v1.invoices.finalize_invoice(draft)
    assert (got.status, got.number is not None) == ("open", True)
    assert [e["type"] for e in sim.all_events()[before:]] == ["invoice.finalized"]
    sim.advance(0)  # the payment attempt follows when the clock moves
    assert sim.get_invoice(draft)["status"] == "paid"
    assert [e["type"] for e in sim.all_events()[before:]] == [
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.finalize_invoice(draft)

    # a failed renewal: void it by hand, the subscription is active again
    sim.fail_next_payments(cus, n=5)
    sim.advance(31 * DAY)
    failing = sim.get_subscription(sub)["latest_invoice"]
    assert sim.get_subscription(sub)["status"] == "past_due"
    before = len(sim.all_events())
    voided = client.v1.invoices.void_invoice(failing)
    assert (voided.status, voided.amount_remaining, voided.next_payment_attempt) == ("void", 0, None)
    assert [e["type"] for e in sim.all_events()[before:]] == ["invoice.voided", "customer.subscription.updated"]
    assert sim.get_subscription(sub)["status"] == "active"
    sim.advance(9 * DAY)  # no retry of a voided invoice
    assert sim.all_events("invoice.payment_failed")[-1]["data"]["object"]["attempt_count"] == 1

    # the next one: marked uncollectible by hand
    sim.advance(20 * DAY)
    next_one = sim.get_subscription(sub)["latest_invoice"]
    assert sim.get_invoice(next_one)["status"] == "open"
    marked = client.v1.invoices.mark_uncollectible(next_one)
    assert marked.status == "uncollectible"
    assert sim.all_events()[-2]["type"] == "invoice.marked_uncollectible"
    assert sim.get_subscription(sub)["status"] == "active"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.mark_uncollectible(next_one)
    assert client.v1.invoices.void_invoice(next_one).status == "void"
    with pytest.raises(SimError):
        sim.void_invoice(next_one)


def test_lost_invoice_events_stay_listed_until_the_30_days_pass():
    r = Receiver()
    sim = Simulator(
        payment_events=False,
        start=T0,
        seed=8,
        api_key=KEY,
        webhook_urls=[r.url],
        webhook_secret=SIM_SECRET,
        delivery=FAST_DELIVERY,
    )
    url, stop = start_in_thread(sim)
    client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    ctl = SimControl(url)
    ctl.configure_delivery(drop_types="invoice.paid")
    sub = sim.create_subscription(sim.create_customer()["id"])["id"]
    assert sim.flush(5)
    got = [json.loads(h["body"])["type"] for h in r.hits]
    assert "invoice.paid" not in got
    assert "invoice.payment_succeeded" in got
    [lost] = sim.all_events("invoice.paid")
    assert sim.delivery.deliveries(lost["id"]) == [
        {"event": lost["id"], "type": "invoice.paid", "result": "dropped", "reason": "drop_types"}
    ]
    assert [e.id for e in client.v1.events.list({"type": "invoice.paid"}).data] == [lost["id"]]  # the backfill finds it

    heard = len(r.hits)
    ctl.configure_delivery(drop_types=["invoice.*"])
    sim.update_subscription_metadata(sub, {"k": "v"})
    sim.advance(29 * DAY)
    assert client.v1.events.retrieve(lost["id"]).id == lost["id"]
    sim.advance(2 * DAY)  # now more than 30 days old: gone from the API too
    assert sim.flush(5)
    assert lost["id"] not in [e.id for e in client.v1.events.list({"limit": 100}).data]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve(lost["id"])
    types = [json.loads(h["body"])["type"] for h in r.hits[heard:]]
    assert types == ["customer.subscription.updated", "customer.subscription.updated"]  # metadata, renewal
    ctl.configure_delivery(drop_types=[])
    ctl.close()
    stop()
    sim.close()
    r.close()


def test_plan_changes(served):
    sim, url, client = served
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(cus)["id"]
    item = sim.get_subscription(sub)["items"]["data"][0]
    cheap = sim.create_price(unit_amount=999, interval="month", id="price_basic_monthly")["id"]
    sim.advance(10 * DAY)
    before = len(sim.all_events())
    changed = client.v1.subscriptions.update(sub, {"items": [{"id": item["id"], "price": cheap}]})
    assert changed["items"].data[0].id == item["id"]  # the item keeps its id
    assert changed["items"].data[0].price.id == cheap
    assert changed["items"].data[0].current_period_end == item["current_period_end"]  # same interval
    [updated] = sim.all_events()[before:]
    assert updated["type"] == "customer.subscription.updated"
    assert "items" in updated["data"]["previous_attributes"]
    sim.advance(21 * DAY + 3600)
    renewal = sim.get_invoice(sim.get_subscription(sub)["latest_invoice"])
    assert renewal["amount_paid"] == 999

    # another interval: the classic subscription restarts now, invoiced at once
    now = sim.now()
    before = len(sim.all_events())
    yearly = sim.change_subscription_price(sub, "price_premium_yearly", quantity=2)
    assert yearly["billing_cycle_anchor"] == now
    assert yearly["items"]["data"][0]["quantity"] == 2
    assert yearly["items"]["data"][0]["current_period_start"] == now
    assert [e["type"] for e in sim.all_events()[before:]] == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    inv = sim.get_invoice(sim.get_subscription(sub)["latest_invoice"])
    assert (inv["billing_reason"], inv["amount_paid"]) == ("subscription_update", 2 * 29990)

    ctl = SimControl(url)
    with pytest.raises(Exception, match="No such price"):
        ctl.change_subscription_price(sub, "price_missing")
    two = sim.create_subscription(cus, items=[{"price": "price_premium_monthly"}, {"price": "price_addon_monthly"}])
    with pytest.raises(SimError):
        sim.change_subscription_price(two["id"], cheap)  # which item?
    addon = two["items"]["data"][1]["id"]
    with pytest.raises(SimError, match="same price"):
        sim.change_subscription_price(two["id"], "price_premium_monthly", item=addon)
    after = ctl.change_subscription_price(two["id"], cheap, item=two["items"]["data"][0]["id"])
    assert sorted(i["price"]["id"] for i in after["items"]["data"]) == sorted([cheap, "price_addon_monthly"])
    ctl.close()


def test_a_flexible_item_changing_interval_takes_a_new_items_period(served):
    sim, _, _ = served
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(
        cus, items=[{"price": "price_premium_monthly"}, {"price": "price_addon_monthly"}], billing_mode="flexible"
    )
    addon = sub["items"]["data"][1]
    sim.advance(40 * DAY)
    before = len(sim.all_events())
    changed = sim.change_subscription_price(sub["id"], "price_addon_yearly", item=addon["id"])
    new = next(i for i in changed["items"]["data"] if i["id"] == addon["id"])
    assert new["current_period_start"] == sim.now()
    assert new["current_period_end"] == 1_767_225_600  # the anchor's next yearly boundary, 2026-01-01
    assert changed["billing_cycle_anchor"] == T0
    assert [e["type"] for e in sim.all_events()[before:]] == ["customer.subscription.updated"]
