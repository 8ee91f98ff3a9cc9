"""The simulator's subscriptions of several items: mixed intervals, each item's own renewal, item changes."""

from __future__ import annotations

import pytest
import stripe

from stripesim import ADDON_MONTHLY_PRICE, ADDON_PRICE, BASIL, DEFAULT_PRICE, LEGACY, SimError, Simulator
from stripesim.model import add_interval
from stripesim.server import parse_params, start_in_thread

# The payments' own events (payment_events) are off in these tests: they pin the
# sequences of subscriptions' and invoices' events, which Stripe interleaves with them.
T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86400
HOUR = 3600
KEY = "sk_test_sim"
CLOVER = "2025-09-30.clover"


def month(n: int) -> int:
    return add_interval(T0, "month", 1, n)


@pytest.fixture
def served(request):
    version = getattr(request, "param", CLOVER)
    sim = Simulator(payment_events=False, start=T0, seed=5, api_key=KEY, api_version=version)
    url, shutdown = start_in_thread(sim)
    yield sim, stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    shutdown()
    sim.close()


def base_and_addon(client, sim, **params):
    cus = sim.create_customer(email="m@example.com")["id"]
    return client.v1.subscriptions.create(
        {"customer": cus, "items": [{"price": DEFAULT_PRICE}, {"price": ADDON_PRICE, "quantity": 2}], **params}
    )


def test_mixed_intervals_renew_each_on_its_own_for_thirteen_months(served):
    sim, client = served
    mark = len(sim.all_events())
    sub = base_and_addon(client, sim)
    assert sub.status == "active"
    assert sub.billing_mode.type == "flexible"  # the default from 2025-09-30.clover on
    monthly, yearly = sub["items"].data
    assert (monthly.id[:3], monthly.price.id, monthly.price.product, monthly.quantity) == (
        "si_",
        DEFAULT_PRICE,
        "prod_premium",
        1,
    )
    assert (yearly.price.id, yearly.price.product, yearly.quantity, yearly.created) == (
        ADDON_PRICE,
        "prod_addon",
        2,
        T0,
    )
    assert (monthly.current_period_start, monthly.current_period_end) == (T0, month(1))
    assert (yearly.current_period_start, yearly.current_period_end) == (T0, month(12))
    first = client.v1.invoices.retrieve(sub.latest_invoice)
    assert first.amount_paid == 2999 + 2 * 9900
    assert [ln.parent.subscription_item_details.subscription_item for ln in first.lines.data] == [monthly.id, yearly.id]

    sim.advance_to(month(13) + 2 * HOUR)
    events = [e for e in sim.all_events()[mark:] if e["type"] != "customer.created"]
    creation = [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    renewal = [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    assert [e["type"] for e in events] == creation + renewal * 13
    updates = [e for e in events[len(creation) :] if e["type"] == "customer.subscription.updated"]
    assert [e["created"] for e in updates] == [month(n) for n in range(1, 14)]
    for e in updates:
        assert set(e["data"]["previous_attributes"]) == {"items", "latest_invoice"}

    created = [e["data"]["object"] for e in events[len(creation) :] if e["type"] == "invoice.created"]
    lines = [
        [(ln["pricing"]["price_details"]["price"], ln["amount"]) for ln in inv["lines"]["data"]] for inv in created
    ]
    assert lines[:11] == [[(DEFAULT_PRICE, 2999)]] * 11
    assert lines[11] == [(DEFAULT_PRICE, 2999), (ADDON_PRICE, 19800)]  # periods aligned: one combined invoice
    assert lines[12] == [(DEFAULT_PRICE, 2999)]
    combined = created[11]
    assert combined["amount_due"] == 2999 + 19800
    assert combined["billing_reason"] == "subscription_cycle"
    assert (combined["period_start"], combined["period_end"]) == (month(11), month(12))
    assert [ln["period"] for ln in combined["lines"]["data"]] == [
        {"start": month(12), "end": month(13)},
        {"start": month(12), "end": month(24)},
    ]
    assert {ln["parent"]["subscription_item_details"]["subscription"] for ln in combined["lines"]["data"]} == {sub.id}

    now = client.v1.subscriptions.retrieve(sub.id)
    got = {it.price.id: (it.current_period_start, it.current_period_end) for it in now["items"].data}
    assert got == {DEFAULT_PRICE: (month(13), month(14)), ADDON_PRICE: (month(12), month(24))}
    assert "current_period_end" not in now
    paid = client.v1.invoices.list({"subscription": sub.id, "status": "paid", "limit": 100}).data
    assert len(paid) == 14


def test_the_item_that_renews_first_is_the_subscriptions_period(served):
    """Cancel at period end resolves to the earliest item period end, as Stripe does for mixed intervals."""
    sim, client = served
    sub = base_and_addon(client, sim)
    sim.advance(DAY)
    upd = client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    assert upd.cancel_at == month(1)
    mark = len(sim.all_events())
    sim.advance_to(month(1) + DAY)
    assert [e["type"] for e in sim.all_events()[mark:]] == ["customer.subscription.deleted"]


@pytest.mark.parametrize("served", [BASIL], indirect=True)
def test_classic_billing_refuses_mixed_intervals_unless_flexible(served):
    sim, client = served
    with pytest.raises(stripe.InvalidRequestError) as err:
        base_and_addon(client, sim)
    assert err.value.http_status == 400
    assert err.value.param == "items"
    assert err.value.user_message.startswith("All prices on a subscription must have the same `recurring.interval`")
    flexible = base_and_addon(client, sim, billing_mode={"type": "flexible"})
    assert flexible.billing_mode.type == "flexible"
    assert {it.current_period_end for it in flexible["items"].data} == {month(1), month(12)}
    same = client.v1.subscriptions.create(
        {
            "customer": flexible.customer,
            "items": [{"price": DEFAULT_PRICE}, {"price": ADDON_MONTHLY_PRICE, "quantity": 3}],
        }
    )
    assert same.billing_mode.type == "classic"
    assert [it.quantity for it in same["items"].data] == [1, 3]
    assert client.v1.invoices.retrieve(same.latest_invoice).amount_paid == 2999 + 3 * 990


def test_pre_basil_items_share_the_subscriptions_period():
    sim = Simulator(payment_events=False, start=T0, seed=2, api_version=LEGACY)
    cus = sim.create_customer()["id"]
    with pytest.raises(SimError, match=r"must have the same `recurring\.interval`"):
        sim.create_subscription(cus, items=[{"price": DEFAULT_PRICE}, {"price": ADDON_PRICE}])
    with pytest.raises(SimError, match="unknown parameter: billing_mode") as err:
        sim.create_subscription(cus, billing_mode="flexible")
    assert err.value.code == "parameter_unknown"
    sub = sim.create_subscription(cus, items=[{"price": DEFAULT_PRICE}, {"price": ADDON_MONTHLY_PRICE}])
    assert (sub["current_period_start"], sub["current_period_end"]) == (T0, month(1))
    assert sub["plan"] is None  # only set for a single item
    assert sub["quantity"] is None
    assert "billing_mode" not in sub
    assert all("current_period_end" not in it for it in sub["items"]["data"])
    mark = len(sim.all_events())
    sim.advance_to(month(1) + HOUR)
    inv = sim.all_events("invoice.created")[-1]["data"]["object"]
    assert inv["subscription"] == sub["id"]
    assert [(ln["price"]["id"], ln["subscription_item"]) for ln in inv["lines"]["data"]] == [
        (DEFAULT_PRICE, sub["items"]["data"][0]["id"]),
        (ADDON_MONTHLY_PRICE, sub["items"]["data"][1]["id"]),
    ]
    assert inv["amount_due"] == 2999 + 990
    updated = sim.all_events()[mark]
    assert updated["data"]["previous_attributes"]["current_period_end"] == month(1)
    sim.close()


def test_items_added_and_removed_on_a_live_subscription(served):
    sim, client = served
    cus = sim.create_customer()["id"]
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": DEFAULT_PRICE}]})
    base = sub["items"].data[0].id
    sim.advance_to(month(1) + 10 * DAY)
    mark = len(sim.all_events())
    added = client.v1.subscription_items.create({"subscription": sub.id, "price": ADDON_PRICE})
    assert added.id.startswith("si_")
    assert added.subscription == sub.id
    assert added.created == sim.now()
    # not prorated: its first period runs from now to the anchor's next yearly boundary
    assert (added.current_period_start, added.current_period_end) == (sim.now(), month(12))
    [upd] = sim.all_events()[mark:]
    assert upd["type"] == "customer.subscription.updated"
    assert [it["id"] for it in upd["data"]["previous_attributes"]["items"]["data"]] == [base]
    assert [it["id"] for it in upd["data"]["object"]["items"]["data"]] == [base, added.id]
    listed = client.v1.subscription_items.list({"subscription": sub.id})
    assert [it.id for it in listed.data] == [base, added.id]

    client.v1.subscriptions.update(sub.id, {"items": [{"id": base, "quantity": 2}]})
    assert client.v1.subscription_items.retrieve(base).quantity == 2
    sim.advance_to(month(12) + HOUR)
    year_end = sim.all_events("invoice.created")[-1]["data"]["object"]
    assert [(ln["quantity"], ln["amount"]) for ln in year_end["lines"]["data"]] == [(2, 5998), (1, 9900)]

    mark = len(sim.all_events())
    gone = client.v1.subscription_items.delete(added.id)
    assert (gone.id, gone.deleted) == (added.id, True)
    assert [e["type"] for e in sim.all_events()[mark:]] == ["customer.subscription.updated"]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscription_items.retrieve(added.id)
    assert err.value.http_status == 404
    sim.advance_to(month(13) + HOUR)
    last = sim.all_events("invoice.created")[-1]["data"]["object"]
    assert [ln["pricing"]["price_details"]["price"] for ln in last["lines"]["data"]] == [DEFAULT_PRICE]
    with pytest.raises(stripe.InvalidRequestError, match="at least one item"):
        client.v1.subscription_items.delete(base)


def test_an_added_item_that_renews_first_moves_the_renewal(served):
    sim, client = served
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(cus, price="price_premium_yearly")
    weekly = sim.create_price(unit_amount=100, interval="week", id="price_weekly")
    sim.advance(DAY)
    sim.update_subscription_items(sub["id"], add=[{"price": weekly["id"]}])
    mark = len(sim.all_events())
    sim.advance_to(T0 + 7 * DAY + HOUR)  # the anchor's first weekly boundary
    evs = sim.all_events()[mark:]
    assert [e["type"] for e in evs] == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    assert evs[1]["data"]["object"]["amount_due"] == 100
    assert client.v1.subscriptions.retrieve(sub["id"])["items"].data[0].current_period_end == month(12)


@pytest.mark.parametrize("served", [BASIL], indirect=True)
def test_classic_refuses_an_item_of_another_interval_and_shares_the_period_of_its_own(served):
    sim, client = served
    cus = sim.create_customer()["id"]
    sub = sim.create_subscription(cus)
    with pytest.raises(stripe.InvalidRequestError, match=r"same `recurring\.interval`"):
        client.v1.subscription_items.create({"subscription": sub["id"], "price": ADDON_PRICE})
    sim.advance(5 * DAY)
    item = client.v1.subscription_items.create({"subscription": sub["id"], "price": ADDON_MONTHLY_PRICE})
    assert (item.current_period_start, item.current_period_end) == (T0, month(1))
    with pytest.raises(stripe.InvalidRequestError, match="same price"):
        client.v1.subscription_items.create({"subscription": sub["id"], "price": ADDON_MONTHLY_PRICE})


def test_trial_of_several_items(served):
    sim, client = served
    sub = base_and_addon(client, sim, trial_period_days=14)
    assert sub.status == "trialing"
    trial = client.v1.invoices.retrieve(sub.latest_invoice)
    assert [(ln.amount, ln.description) for ln in trial.lines.data] == [
        (0, "Trial period for Premium Plan"),
        (0, "Trial period for Priority Support"),
    ]
    sim.advance(14 * DAY + HOUR)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after.status == "active"
    ends = [it.current_period_end for it in after["items"].data]
    assert ends == [T0 + 14 * DAY + 31 * DAY, add_interval(T0 + 14 * DAY, "year", 1, 1)]
    assert client.v1.invoices.retrieve(after.latest_invoice).amount_paid == 2999 + 2 * 9900


def test_item_arguments_are_checked(served):
    sim, _ = served
    cus = sim.create_customer()["id"]
    with pytest.raises(SimError, match="only specify one"):
        sim.create_subscription(cus, price=ADDON_PRICE, items=[{"price": DEFAULT_PRICE}])
    with pytest.raises(SimError, match="No such price") as err:
        sim.create_subscription(cus, items=[{"price": "price_nope"}])
    assert err.value.param == "items[0][price]"
    with pytest.raises(SimError, match="same price"):
        sim.create_subscription(cus, items=[{"price": DEFAULT_PRICE}, {"price": DEFAULT_PRICE}])
    with pytest.raises(SimError, match="No such price") as err:
        sim.create_subscription(cus, price="price_nope")
    assert err.value.param == "price"
    assert sim.create_subscription(cus, billing_mode="classic")["billing_mode"] == {"type": "classic"}


def test_nested_form_parameters():
    pairs = [
        ("items[0][price]", ["p1"]),
        ("items[1][price]", ["p2"]),
        ("items[1][quantity]", ["3"]),
        ("items[10][price]", ["p10"]),
        ("billing_mode[type]", ["flexible"]),
        ("expand[]", ["latest_invoice"]),
        ("types[0]", ["a"]),
        ("metadata[k]", ["v"]),
        ("customer", ["cus_1"]),
    ]
    assert parse_params(pairs) == {
        "items": [{"price": "p1"}, {"price": "p2", "quantity": "3"}, {"price": "p10"}],
        "billing_mode": {"type": "flexible"},
        "expand": ["latest_invoice"],
        "types": ["a"],
        "metadata": {"k": "v"},
        "customer": "cus_1",
    }
