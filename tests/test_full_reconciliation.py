"""One reconciliation leaves subscriptions, items, invoices and the ledger equal to Stripe's; a second finds nothing.

Whatever was lost: a plan change, an invoice voided, a payment older than
Stripe's 30 days of events, or any mix of webhooks never delivered.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from helpers import GRACE, SECRET, apply, post_event
from pipeline import drain, invoice_mismatches, receiver, subscription_mismatches, worker
from sim import DAY, api_for, running_simulator

from reconciler import reconcile
from subsync import db
from subsync.ledger import facts_implied_by_invoice


def run(api, **kwargs):
    return reconcile.run(db.pool(), api, grace=GRACE, **kwargs)


def invoice_ledger_mismatches(conn, sim) -> list[str]:
    """The invoice facts of the ledger against those Stripe's invoices imply."""
    now = datetime.now(UTC)
    expected = {
        fact.fact_key: (fact.status, fact.amount)
        for obj in sim.truth(["invoices"], account="all")["invoices"]
        for fact in facts_implied_by_invoice(obj, now)
    }
    rows = conn.execute("SELECT fact_key, status, amount FROM payments WHERE invoice_id IS NOT NULL").fetchall()
    ours = {r["fact_key"]: (r["status"], r["amount"]) for r in rows}
    problems = [f"{k}: ours {ours.get(k)}, implied {v}" for k, v in expected.items() if ours.get(k) != v]
    problems += [f"{k}: no invoice implies it" for k in ours.keys() - expected.keys()]
    return problems


def assert_second_run_finds_nothing(api):
    again = run(api)
    assert (again.created, again.drifted, again.fixed, again.missing_in_stripe) == (0, 0, 0, 0)
    assert (again.invoices_drifted, again.invoices_fixed, again.ledger_added) == (0, 0, 0)


@pytest.fixture
def stripe_sim(conn, broker):
    # Everything created within the last 35 days: the invoice listing covers it.
    with running_simulator(start=int(time.time()) - 20 * DAY) as (sim, url):
        yield sim, api_for(url)


def test_a_lost_plan_change_is_repaired_with_the_columns_that_differ(stripe_sim, conn):
    sim, api = stripe_sim
    sub = sim.create_subscription(sim.create_customer(email="plan@example.com")["id"])["id"]
    run(api)
    sim.change_subscription_price(sub, "price_premium_yearly")  # its webhooks never came
    dry = run(api, dry_run=True)
    (change,) = [c for c in dry.changes if c["subscription_id"] == sub]
    assert change["changes"]["price_id"] == ["price_premium_monthly", "price_premium_yearly"]
    assert "items" in change["changes"]
    report = run(api)
    assert (report.drifted, report.fixed) == (1, 1)
    row = conn.execute("SELECT price_id FROM subscriptions").fetchone()
    assert row["price_id"] == "price_premium_yearly"
    assert [r["price_id"] for r in conn.execute("SELECT price_id FROM subscription_items")] == ["price_premium_yearly"]
    assert subscription_mismatches(conn, sim) == []
    assert_second_run_finds_nothing(api)


def test_a_lost_invoice_voided_is_repaired(stripe_sim, conn):
    sim, api = stripe_sim
    customer = sim.create_customer(email="void@example.com")["id"]
    sim.fail_next_payments(customer, until_new_card=True)
    sub = sim.create_subscription(customer)["id"]
    run(api)
    (invoice,) = [i for i in sim.truth(["invoices"])["invoices"] if i["status"] == "open"]
    assert conn.execute("SELECT status FROM invoices WHERE id = %s", (invoice["id"],)).fetchone()["status"] == "open"
    sim.void_invoice(invoice["id"])
    report = run(api)
    assert (report.invoices_drifted, report.invoices_fixed) == (1, 1)
    assert conn.execute("SELECT status FROM invoices WHERE id = %s", (invoice["id"],)).fetchone()["status"] == "void"
    assert invoice_mismatches(conn, sim) == []
    assert sub
    assert_second_run_finds_nothing(api)


def test_a_payment_older_than_stripes_30_days_of_events_reaches_the_ledger(client, conn, broker):
    with running_simulator(start=int(time.time()) - 80 * DAY) as (sim, url):
        api = api_for(url)
        customer = sim.create_customer(email="late@example.com")["id"]
        sim.fail_next_payments(customer, until_new_card=True)
        sub = sim.create_subscription(customer)["id"]
        # The failure's webhook came: the invoice is open here.
        failed = next(e for e in sim.all_events() if e["type"] == "invoice.payment_failed")
        post_event(client, failed)
        assert apply(failed["id"]) == "processed"
        invoice = failed["data"]["object"]
        sim.pay_open_invoice(sub)  # its invoice.paid is lost...
        sim.advance(40 * DAY)  # ...and older than any event Stripe still lists
        listed = sim.list_events(type="invoice.paid")["data"]
        assert not [e for e in listed if e["data"]["object"]["id"] == invoice["id"]]
        check_the_payment_is_found(conn, api, invoice)


def check_the_payment_is_found(conn, api, invoice):
    report = run(api)
    assert report.ledger_added >= 1
    completed = conn.execute(
        "SELECT status, amount, source, stripe_event_id FROM payments WHERE fact_key = %s",
        (f"invoice:{invoice['id']}:completed",),
    ).fetchone()
    assert (completed["status"], completed["source"], completed["stripe_event_id"]) == ("COMPLETED", "reconcile", None)
    status = conn.execute("SELECT status FROM invoices WHERE id = %s", (invoice["id"],)).fetchone()["status"]
    assert status == "paid"
    assert_second_run_finds_nothing(api)


def test_a_terminal_row_stripe_contradicts_is_reported_as_such_never_as_newer(stripe_sim, conn):
    sim, api = stripe_sim
    sub = sim.create_subscription(sim.create_customer(email="term@example.com")["id"])["id"]
    run(api)
    conn.execute("UPDATE subscriptions SET status = 'canceled', access = 'none' WHERE id = %s", (sub,))
    for _ in range(2):  # the contradiction stands: reported by every run
        report = run(api)
        assert (report.terminal_here, report.left_alone_newer, report.drifted) == (1, 0, 0)
        assert report.terminal_ids == [sub]
        assert {c.get("kind") for c in report.changes} == {"terminal_here"}
    # What the rules say is done with it: a canceled subscription stays canceled.
    assert conn.execute("SELECT status FROM subscriptions").fetchone()["status"] == "canceled"


def test_after_any_mix_of_lost_events_one_run_makes_every_table_equal_to_stripes(conn, broker):
    lost = {"drop_rate": 0.3, "drop_types": ["invoice.paid", "invoice.voided", "customer.subscription.updated"]}
    with (
        receiver() as url,
        worker(broker),
        running_simulator(
            start=int(time.time()) - 70 * DAY, webhook_urls=[url], webhook_secret=SECRET, delivery=lost
        ) as (sim, sim_url),
    ):
        account = sim.create_account()["id"]
        for i in range(12):
            on = account if i % 3 == 0 else None
            customer = sim.create_customer(email=f"m{i}@example.com", account=on)["id"]
            if i % 4 == 1:
                sim.fail_next_payments(customer, until_new_card=True, account=on)
            items = [{"price": "price_premium_monthly"}] + ([{"price": "price_addon_yearly"}] if i % 2 else [])
            sub = sim.create_subscription(customer, items=items, billing_mode="flexible", account=on)["id"]
            if i == 4:
                sim.change_subscription_price(sub, "price_premium_yearly", account=on)
            sim.advance(DAY)
        sim.advance(int(time.time()) - 60 - sim.now())
        drain(conn, sim)
        api = api_for(sim_url)
        run(api)
        assert subscription_mismatches(conn, sim) == []
        assert invoice_mismatches(conn, sim) == []
        assert invoice_ledger_mismatches(conn, sim) == []
        assert_second_run_finds_nothing(api)
