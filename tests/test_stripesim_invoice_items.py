"""Invoice items in the simulator, and starting a subscription with ``trial_end=now`` (reactivation)."""

from __future__ import annotations

import pytest
import stripe

from stripesim import BASIL, LEGACY, SimError, Simulator, start_in_thread

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86400
KEY = "sk_test_sim"


@pytest.fixture
def served(request):
    sim = Simulator(start=T0, seed=9, api_key=KEY, api_version=getattr(request, "param", BASIL))
    url, shutdown = start_in_thread(sim)
    client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    yield sim, client
    shutdown()
    sim.close()


def test_a_pending_item_is_billed_by_the_next_renewal(served):
    sim, client = served
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(cus)
    mark = len(sim.all_events())
    item = client.v1.invoice_items.create(
        {"customer": cus, "amount": 500, "currency": "usd", "description": "Extra seats"}
    )
    [created] = sim.all_events()[mark:]
    assert created["type"] == "invoiceitem.created"
    assert (item.object, item.invoice, item.amount, item.description) == ("invoiceitem", None, 500, "Extra seats")
    assert item.id.startswith("ii_")
    assert [i.id for i in client.v1.invoice_items.list({"customer": cus, "pending": True}).data] == [item.id]
    sim.advance(31 * DAY + 3600)
    inv = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub["id"]).latest_invoice)
    assert (inv.status, inv.amount_due, inv.amount_paid) == ("paid", 3499, 3499)
    regular, extra = inv.lines.data
    assert regular.parent.type == "subscription_item_details"
    assert (extra.amount, extra.description, extra.parent.type) == (500, "Extra seats", "invoice_item_details")
    assert extra.parent.invoice_item_details.invoice_item == item.id
    assert client.v1.invoice_items.retrieve(item.id).invoice == inv.id
    assert client.v1.invoice_items.list({"customer": cus, "pending": True}).data == []
    charge = client.v1.charges.list({"customer": cus}).data[0]
    assert charge.amount == 3499


@pytest.mark.parametrize("served", [LEGACY], indirect=True)
def test_before_basil_the_item_line_is_of_type_invoiceitem(served):
    sim, client = served
    cus = sim.create_customer()["id"]
    item = sim.create_invoice_item(cus, 700, description="Setup fee")
    assert "unit_amount" in item
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": "price_premium_monthly"}]})
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert inv.amount_paid == 2999 + 700  # the first invoice takes pending items in
    extra = inv.lines.data[-1]
    assert (extra.type, extra.invoice_item, extra.amount) == ("invoiceitem", item["id"], 700)


def test_an_item_for_one_subscription_waits_for_that_one(served):
    sim, client = served
    cus = sim.create_customer()["id"]
    first = sim.create_subscription(cus)
    sim.advance(DAY)
    later = sim.create_subscription(cus, price="price_premium_yearly")
    item = client.v1.invoice_items.create({"customer": cus, "amount": 250, "subscription": first["id"]})
    assert item.parent.subscription_details.subscription == first["id"]
    eur = sim.create_invoice_item(cus, 100, currency="eur")
    sim.advance(31 * DAY)  # the first renews on Feb 1
    renewal = sim.get_invoice(sim.get_subscription(first["id"])["latest_invoice"])
    assert [ln["amount"] for ln in renewal["lines"]["data"]] == [2999, 250]
    assert renewal["lines"]["data"][1]["parent"]["invoice_item_details"]["subscription"] == first["id"]
    assert sim.get_invoice(later["latest_invoice"])["amount_due"] == 29990
    assert sim.get_invoice_item(eur["id"])["invoice"] is None  # no invoice in euros yet
    with pytest.raises(SimError, match="does not belong"):
        sim.create_invoice_item(sim.create_customer()["id"], 100, subscription=first["id"])


def test_deleting_a_pending_item(served):
    sim, client = served
    cus = sim.create_customer()["id"]
    item = client.v1.invoice_items.create({"customer": cus, "amount": 900})
    mark = len(sim.all_events())
    gone = client.v1.invoice_items.delete(item.id)
    assert (gone.id, gone.deleted) == (item.id, True)
    [deleted] = sim.all_events()[mark:]
    assert (deleted["type"], deleted["data"]["object"]["amount"]) == ("invoiceitem.deleted", 900)
    sub = sim.create_subscription(cus)
    assert sim.get_invoice(sub["latest_invoice"])["amount_due"] == 2999
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.invoice_items.retrieve(item.id)
    assert err.value.http_status == 404
    billed = sim.create_invoice_item(cus, 100)
    sim.advance(31 * DAY)
    with pytest.raises(SimError, match="no longer editable"):
        sim.delete_invoice_item(billed["id"])


def test_reactivation_with_trial_end_now_charges_the_period_and_what_is_owed(served):
    sim, client = served
    cus = sim.create_customer()["id"]
    old = sim.create_subscription(cus)
    sim.advance(10 * DAY)
    client.v1.subscriptions.cancel(old["id"])
    sim.advance(20 * DAY)
    owed = client.v1.invoice_items.create({"customer": cus, "amount": 1200, "description": "Balance from last plan"})
    mark = len(sim.all_events())
    sub = client.v1.subscriptions.create(
        {
            "customer": cus,
            "items": [{"price": "price_premium_monthly"}],
            "trial_end": "now",
            "trial_period_days": 14,  # trial_end=now wins: no trial at all
        }
    )
    assert (sub.status, sub.trial_start, sub.trial_end) == ("active", None, None)
    assert sub["items"].data[0].current_period_start == sim.now()
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (inv.billing_reason, inv.status, inv.amount_paid) == ("subscription_create", "paid", 2999 + 1200)
    assert [ln.amount for ln in inv.lines.data] == [2999, 1200]
    assert client.v1.invoice_items.retrieve(owed.id).invoice == inv.id
    types = [e["type"] for e in sim.all_events()[mark:]]
    assert types[0] == "customer.subscription.created"
    assert types[-1] == "customer.subscription.updated"
    assert "customer.subscription.trial_will_end" not in types
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.create(
            {"customer": cus, "items": [{"price": "price_premium_yearly"}], "trial_end": "x"}
        )
    assert err.value.param == "trial_end"


def test_trial_end_now_in_process(served):
    sim, _ = served
    cus = sim.create_customer()["id"]
    sim.create_invoice_item(cus, 300)
    sub = sim.create_subscription(cus, trial_end="now", trial_days=30)
    assert sub["status"] == "active"
    assert sim.get_invoice(sub["latest_invoice"])["amount_paid"] == 3299
    trial = sim.create_subscription(sim.create_customer()["id"], trial_end=sim.now() + DAY)
    assert trial["status"] == "trialing"  # a time still means a trial
