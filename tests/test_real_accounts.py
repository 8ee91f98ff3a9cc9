"""Real account shapes: items with their own periods, connected accounts, one mode, no lock-out when late.

Through the receiver and the worker (or the grace check and the
reconciliation) against real PostgreSQL and Redis, and the simulator over
HTTP through the stripe library.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
from helpers import GRACE, apply, event_row, make_event, post_event, queued_ids, subscription_obj
from sim import DAY, SIM_KEY, api_for, running_simulator

from reconciler import backfill, grace, reconcile
from subsync import config, db
from subsync.store import jobs
from webhooks import create_app
from worker.apply import apply_events


@pytest.fixture
def stripe_sim(conn, broker):
    # The first monthly period ends 5 days from the real now.
    with running_simulator(start=int(datetime.now(UTC).timestamp()) - 25 * DAY) as (sim, url):
        yield sim, api_for(url, library_retries=False)


@pytest.fixture
def sim_cli(conn, broker):
    """The simulator (history from 40 days ago), the product's client on it, and the commands' app on it."""
    with running_simulator() as (sim, url):
        settings = dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=url)
        yield sim, api_for(url, library_retries=False), create_app(settings, commands=True)


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def connected_subscription(sim, email="conn@example.com"):
    """A connected account with one customer on a monthly subscription: (account, subscription id)."""
    account = sim.create_account()["id"]
    customer = sim.create_customer(email=email, account=account)["id"]
    return account, sim.create_subscription(customer, account=account)["id"]


def row(conn, sub_id):
    return conn.execute("SELECT * FROM subscriptions WHERE id = %s", (sub_id,)).fetchone()


def items(conn, sub_id):
    return conn.execute(
        "SELECT id, price_id, product_id, quantity, current_period_end, account FROM subscription_items"
        " WHERE subscription_id = %s ORDER BY price_id",
        (sub_id,),
    ).fetchall()


MONTHLY_AND_YEARLY = [{"price": "price_premium_monthly"}, {"price": "price_addon_yearly"}]


def test_a_monthly_and_yearly_subscription_takes_the_monthly_period_and_keeps_both_items(stripe_sim, conn):
    sim, api = stripe_sim
    customer = sim.create_customer(email="two@example.com")["id"]
    sub = sim.create_subscription(customer, items=MONTHLY_AND_YEARLY, billing_mode="flexible")
    reconcile.run(db.pool(), api, grace=GRACE)
    ours = row(conn, sub["id"])
    ends = {i["price"]["id"]: i["current_period_end"] for i in sub["items"]["data"]}
    assert ours["current_period_end"].timestamp() == ends["price_premium_monthly"]
    assert ours["price_id"] == sub["items"]["data"][0]["price"]["id"]
    stored = items(conn, sub["id"])
    assert [(i["price_id"], i["current_period_end"].timestamp()) for i in stored] == [
        ("price_addon_yearly", ends["price_addon_yearly"]),
        ("price_premium_monthly", ends["price_premium_monthly"]),
    ]
    assert {i["product_id"] for i in stored} == {"prod_premium", "prod_addon"}


def test_a_lost_monthly_renewal_enters_grace_at_the_monthly_end_and_is_repaired_from_stripe(stripe_sim, conn):
    sim, api = stripe_sim
    customer = sim.create_customer(email="two@example.com")["id"]
    sub = sim.create_subscription(customer, items=MONTHLY_AND_YEARLY, billing_mode="flexible")["id"]
    reconcile.run(db.pool(), api, grace=GRACE)
    period_end = row(conn, sub)["current_period_end"]
    sim.advance(31 * DAY)  # the monthly item renews at Stripe; its webhooks never came

    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
    assert row(conn, sub)["access"] == "grace"
    result = grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE)
    assert (result.asked_stripe, result.repaired_from_stripe) == (1, 1)
    repaired = row(conn, sub)
    assert (repaired["status"], repaired["access"]) == ("active", "full")
    assert repaired["current_period_end"] > period_end
    monthly = next(i for i in items(conn, sub) if i["price_id"] == "price_premium_monthly")
    assert monthly["current_period_end"] == repaired["current_period_end"]


def test_an_item_that_left_the_subscription_is_gone_here(client, conn):
    two = subscription_obj("sub_items")
    second = {**two["items"]["data"][0], "id": "si_second", "price": {"id": "price_other", "product": "prod_x"}}
    two["items"]["data"].append(second)
    now = int(datetime.now(UTC).timestamp())
    for obj, created in ((two, now - 10), (subscription_obj("sub_items"), now)):
        event = make_event("customer.subscription.updated", obj, created=created)
        post_event(client, event)
        assert apply(event["id"]) == "processed"
    assert [i["id"] for i in items(conn, "sub_items")] == ["si_items"]
    change = conn.execute("SELECT after FROM subscription_changes ORDER BY id DESC LIMIT 1").fetchone()["after"]
    assert [i["id"] for i in change["items"]] == ["si_items"]


def test_a_connected_accounts_event_is_stored_on_every_row_with_its_account(client, conn):
    sub = make_event("customer.subscription.created", subscription_obj("sub_conn"))
    sub["account"] = "acct_conn"
    paid = make_event(
        "invoice.paid",
        {
            "id": "in_conn",
            "object": "invoice",
            "status": "paid",
            "customer": "cus_1",
            "subscription": "sub_conn",
            "amount_due": 2999,
            "amount_paid": 2999,
            "currency": "usd",
            "status_transitions": {"paid_at": 1764000000},
        },
    )
    paid["account"] = "acct_conn"
    customer = make_event("customer.created", {"id": "cus_conn", "object": "customer", "email": "c@example.com"})
    customer["account"] = "acct_conn"
    for event in (sub, paid, customer):
        post_event(client, event)
        assert apply(event["id"]) == "processed"
    for table in ("subscriptions", "subscription_items", "invoices", "payments", "customers"):
        accounts = {r["account"] for r in conn.execute(f"SELECT account FROM {table}")}
        assert accounts == {"acct_conn"}, table


def test_a_connected_renewal_is_repaired_on_its_own_account_and_never_missing_in_stripe(stripe_sim, conn, client):
    sim, api = stripe_sim
    account = sim.create_account()["id"]
    customer = sim.create_customer(email="conn@example.com", account=account)["id"]
    sub = sim.create_subscription(customer, account=account)
    # Its sign-up arrives as a webhook of the connected account.
    created = next(e for e in sim.all_events(account=account) if e["type"] == "customer.subscription.created")
    post_event(client, created)
    apply(created["id"])
    active = sim.get_subscription(sub["id"], account=account)
    event = make_event("customer.subscription.updated", active, created=sim.now())
    event["account"] = account
    post_event(client, event)
    apply(event["id"])
    assert row(conn, sub["id"])["account"] == account
    period_end = row(conn, sub["id"])["current_period_end"]
    sim.advance(31 * DAY)  # the renewal at Stripe, its webhooks lost

    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
    result = grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE)
    assert (result.asked_stripe, result.repaired_from_stripe, result.stripe_errors) == (1, 1, 0)
    assert (row(conn, sub["id"])["status"], row(conn, sub["id"])["access"]) == ("active", "full")

    report = reconcile.run(db.pool(), api, grace=GRACE)
    assert report.missing_in_stripe == 0
    assert report.accounts[account].scanned == 1
    assert report.accounts["platform"].scanned == 0
    with db.pool().connection() as c:
        stored = jobs.latest_reconciliation(c)["accounts"]
    assert stored[account]["scanned"] == 1


def test_a_subscription_of_an_account_stripe_will_not_show_us_keeps_its_grace(stripe_sim, conn, client):
    sim, api = stripe_sim
    account = sim.create_account()["id"]
    customer = sim.create_customer(email="gone@example.com", account=account)["id"]
    sub = sim.create_subscription(customer, account=account)
    event = make_event("customer.subscription.updated", sub, created=sim.now())
    event["account"] = account
    post_event(client, event)
    apply(event["id"])
    period_end = row(conn, sub["id"])["current_period_end"]
    sim.deauthorize_account(account)
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
    result = grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE)
    assert result.stripe_errors == 1
    assert row(conn, sub["id"])["access"] == "grace"


def test_an_event_of_the_other_mode_is_stored_and_ignored_never_applied(client, conn, broker):
    live = make_event("customer.subscription.created", subscription_obj("sub_live"))
    live["livemode"] = True
    response = post_event(client, live)
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "duplicate": False}
    stored = event_row(conn, live["id"])
    assert stored["status"] == "ignored"
    assert "live-mode event" in stored["last_error"]
    assert "test mode" in stored["last_error"]
    assert queued_ids(broker) == []
    text = client.get("/metrics").get_data(as_text=True)
    assert 'subsync_webhook_deliveries_total{outcome="other_mode"} 1.0' in text
    # Replayed by hand, it is ignored again by the worker.
    result = app_cli(client, "events", "replay", live["id"])
    assert result.exit_code == 0, result.output
    assert apply(live["id"]) == "ignored"
    assert conn.execute("SELECT count(*) AS n FROM subscriptions").fetchone()["n"] == 0


def app_cli(client, *args):
    return client.application.test_cli_runner().invoke(args=list(args))


def test_a_late_active_snapshot_never_restricts_before_stripe_was_asked(client, conn):
    ended = int((datetime.now(UTC) - GRACE - timedelta(days=2)).timestamp())
    late = make_event("customer.subscription.updated", subscription_obj("sub_late", period_end=ended))
    post_event(client, late)
    assert apply(late["id"]) == "processed"
    assert row(conn, "sub_late")["access"] == "grace"
    # Without an API key the grace check restricts it, as before.
    grace.refresh(db.pool(), grace=GRACE, api=None)
    assert row(conn, "sub_late")["access"] == "restricted"
    # Restricted by the grace check for this period: a later snapshot of the same period leaves it so.
    same_period = subscription_obj("sub_late", period_end=ended, metadata={"a": "1"})
    again = make_event("customer.subscription.updated", same_period)
    post_event(client, again)
    apply(again["id"])
    assert row(conn, "sub_late")["access"] == "restricted"


def test_the_mode_is_the_keys_or_the_settings_and_they_must_agree():
    from subsync import config

    assert config.load({"STRIPE_API_KEY": "sk_live_x"}).livemode is True
    assert config.load({"STRIPE_API_KEY": "rk_test_x"}).livemode is False
    assert config.load({"STRIPE_MODE": "live"}).livemode is True
    assert config.load({}).livemode is None
    with pytest.raises(config.ConfigError, match="STRIPE_MODE"):
        config.load({"STRIPE_API_KEY": "sk_test_x", "STRIPE_MODE": "live"})
    with pytest.raises(config.ConfigError, match="mode"):
        config.load({}).require_mode()
    assert json.dumps(config.load({"STRIPE_MODE": "test"}).require_mode()) == "false"


def test_a_backfill_lists_a_connected_accounts_events_on_that_account(sim_cli, conn, client, event_queue):
    sim, api, _ = sim_cli
    account, _ = connected_subscription(sim)
    listed = sim.all_events(account=account)
    post_event(client, listed[0])  # one webhook of it: we hold something of the account
    report = backfill.backfill(db.pool(), api, event_queue)
    assert (report.accounts[account]["listed"], report.accounts[account]["recovered"]) == (len(listed), len(listed) - 1)
    stored = {(r["id"], r["account"]) for r in conn.execute("SELECT id, account FROM stripe_events")}
    assert stored == {(e["id"], account) for e in listed}


def test_events_fetch_of_a_connected_event_needs_its_account_and_stores_it_on_it(sim_cli, conn):
    sim, _, app = sim_cli
    account, _ = connected_subscription(sim)
    event_id = sim.all_events(account=account)[-1]["id"]
    without = invoke(app, "events", "fetch", event_id)
    assert without.exit_code == 1
    assert f"Stripe has no event {event_id}" in without.output
    assert "needs --account acct_..." in without.output
    fetched = invoke(app, "events", "fetch", event_id, "--account", account)
    assert fetched.output.strip() == f"{event_id}: stored and queued"
    assert event_row(conn, event_id)["account"] == account


def test_reconcile_run_of_one_account_or_the_platform_covers_that_one_alone(sim_cli, conn):
    sim, _, app = sim_cli
    account, connected = connected_subscription(sim)
    platform = sim.create_subscription(sim.create_customer(email="p@example.com")["id"])["id"]
    result = invoke(app, "reconcile", "run", "--account", account, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (set(report["accounts"]), report["created"]) == ({account}, 1)
    assert {(r["id"], r["account"]) for r in conn.execute("SELECT id, account FROM subscriptions")} == {
        (connected, account)
    }
    result = invoke(app, "reconcile", "run", "--account", "platform", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (set(report["accounts"]), report["created"], report["missing_in_stripe"]) == ({"platform"}, 1, 0)
    assert row(conn, platform)["account"] is None
    assert invoke(app, "reconcile", "run", "--account", "cus_1").exit_code == 2


def test_a_late_active_snapshot_of_an_ended_period_is_asked_about_once_and_repaired(sim_cli, conn, client):
    sim, api, _ = sim_cli
    sub = sim.create_subscription(sim.create_customer(email="late@example.com")["id"])["id"]
    old = sim.get_subscription(sub)
    taken = sim.now()
    # Stripe renews it; the old period's snapshot arrives only once its grace is over.
    sim.advance_to(int(datetime.now(UTC).timestamp()) - 60)
    assert datetime.fromtimestamp(old["items"]["data"][0]["current_period_end"], UTC) + GRACE < datetime.now(UTC)
    late = make_event("customer.subscription.updated", old, created=taken)
    post_event(client, late)
    assert apply(late["id"]) == "processed"
    assert row(conn, sub)["access"] == "grace"
    result = grace.refresh(db.pool(), grace=GRACE, api=api)
    assert (result.asked_stripe, result.repaired_from_stripe) == (1, 1)
    repaired = row(conn, sub)
    assert (repaired["status"], repaired["access"]) == ("active", "full")
    [item] = sim.get_subscription(sub)["items"]["data"]
    assert repaired["current_period_end"].timestamp() == item["current_period_end"]


SUMMARY = "entitlements.active_entitlement_summary.updated"


def test_a_connected_thin_summary_is_read_through_its_v2_event_in_its_context(stripe_sim, conn, client):
    sim, api = stripe_sim
    account = sim.create_account()["id"]
    feature = sim.create_feature("api", "API access", account=account)["id"]
    sim.attach_feature("prod_premium", feature, account=account)
    customer = sim.create_customer(email="feat@example.com", account=account)["id"]
    sim.create_subscription(customer, account=account)
    summary = next(e for e in reversed(sim.all_events(account=account)) if e["type"] == SUMMARY)
    # A summary has no URL of its own; without the snapshot's id in the delivery, the v2 event names it.
    thin = {k: v for k, v in sim.thin_event_for(summary["id"]).items() if k != "snapshot_event"}
    post_event(client, thin)
    [result] = apply_events(db.pool(), [thin["id"]], grace=GRACE, api=api)
    assert result.status == "processed", event_row(conn, thin["id"])["last_error"]
    granted = conn.execute("SELECT lookup_key, account FROM customer_entitlements WHERE customer_id = %s", (customer,))
    assert [(r["lookup_key"], r["account"]) for r in granted] == [("api", account)]
