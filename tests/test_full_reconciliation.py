"""One reconciliation leaves subscriptions, items, invoices and the ledger equal to Stripe's; a second finds nothing.

Whatever was lost: a plan change, an invoice voided, a payment older than
Stripe's 30 days of events, or any mix of webhooks never delivered.
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from helpers import GRACE, SECRET, apply, post_event
from pipeline import drain, invoice_mismatches, ledger_mismatches, receiver, subscription_mismatches, worker
from sim import DAY, SIM_KEY, api_for, running_simulator

from reconciler import reconcile
from subsync import config, db
from subsync.ledger import facts_implied_by_invoice
from subsync.stripe_objects import invoice_subscription_id
from webhooks import create_app


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
    lost = {
        "drop_rate": 0.3,
        "drop_types": [
            "invoice.paid",
            "invoice.voided",
            "customer.subscription.updated",
            "customer.subscription.deleted",
        ],
    }
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
            if i % 4 == 2:
                sim.cancel_subscription(sub, account=on)
            sim.advance(DAY)
        sim.advance(int(time.time()) - 60 - sim.now())
        drain(conn, sim)
        # The mix lost at least one cancellation's CANCELLED row.
        assert [p for p in ledger_mismatches(conn, sim) if ":cancelled" in p]
        api = api_for(sim_url)
        run(api)
        assert subscription_mismatches(conn, sim) == []
        assert invoice_mismatches(conn, sim) == []
        assert invoice_ledger_mismatches(conn, sim) == []
        assert ledger_mismatches(conn, sim) == []
        assert_second_run_finds_nothing(api)


def test_a_lost_cancellation_gets_its_cancelled_ledger_row(stripe_sim, conn):
    sim, api = stripe_sim
    sub = sim.create_subscription(sim.create_customer(email="gone@example.com")["id"])["id"]
    run(api)
    sim.cancel_subscription(sub)  # customer.subscription.deleted never came
    assert run(api, dry_run=True).ledger_added == 1
    report = run(api)
    assert (report.drifted, report.fixed, report.ledger_added) == (1, 1, 1)
    row = conn.execute(
        "SELECT status, amount, source, source_id, occurred_at FROM payments WHERE fact_key = %s",
        (f"subscription:{sub}:cancelled",),
    ).fetchone()
    ended = sim.get_subscription(sub)["ended_at"]
    assert (row["status"], row["amount"], row["source"]) == ("CANCELLED", 0, "reconcile")
    assert (row["source_id"], row["occurred_at"].timestamp()) == (str(report.run_id), ended)
    assert ledger_mismatches(conn, sim) == []
    assert_second_run_finds_nothing(api)


def add_old_invoice(conn, invoice_id: str, status: str) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    conn.execute(
        "INSERT INTO invoices (id, status, amount_due, amount_paid, created_at, stripe_updated_at)"
        " VALUES (%s, %s, 100, 0, %s, %s)",
        (invoice_id, status, old, old),
    )


def test_an_old_invoice_stripe_no_longer_has_is_reported_and_the_run_goes_on(stripe_sim, conn):
    sim, api = stripe_sim
    sub = sim.create_subscription(sim.create_customer(email="draft@example.com")["id"])["id"]
    run(api)
    # Drafts Stripe deleted; the second in id order shows the run goes on after the first.
    add_old_invoice(conn, "in_deleted_1", "draft")
    add_old_invoice(conn, "in_deleted_2", "open")
    sim.change_subscription_price(sub, "price_premium_yearly")  # and a change lost meanwhile
    report = run(api)
    assert (report.status, report.error, report.invoices_missing) == ("succeeded", None, 2)
    assert report.missing_invoice_ids == ["in_deleted_1", "in_deleted_2"]
    assert report.fixed == 1
    assert subscription_mismatches(conn, sim) == []
    rows = conn.execute("SELECT id, status FROM invoices WHERE id LIKE 'in_deleted_%' ORDER BY id").fetchall()
    assert [(r["id"], r["status"]) for r in rows] == [("in_deleted_1", "draft"), ("in_deleted_2", "open")]
    stored = conn.execute("SELECT status, invoices_missing FROM reconciliation_runs ORDER BY id DESC").fetchone()
    assert (stored["status"], stored["invoices_missing"]) == ("succeeded", 2)


def open_invoice(sim, email: str) -> tuple[str, str]:
    customer = sim.create_customer(email=email)["id"]
    sim.fail_next_payments(customer, until_new_card=True)
    sub = sim.create_subscription(customer)["id"]
    (invoice,) = [i for i in sim.truth(["invoices"])["invoices"] if invoice_subscription_id(i) == sub]
    return sub, invoice["id"]


def test_invoice_verdicts_other_than_drift_are_counted_and_listed(stripe_sim, conn):
    sim, api = stripe_sim
    _, voided_here = open_invoice(sim, "t@example.com")
    _, newer_here = open_invoice(sim, "n@example.com")
    run(api)
    conn.execute("UPDATE invoices SET status = 'void' WHERE id = %s", (voided_here,))
    conn.execute(
        "UPDATE invoices SET stripe_updated_at = %s WHERE id = %s",
        (datetime.fromtimestamp(sim.now() + 60, UTC), newer_here),
    )
    for _ in range(2):  # the contradiction stands: reported by every run
        report = run(api)
        assert (report.terminal_here, report.left_alone_newer) == (1, 1)
        assert (report.invoices_drifted, report.invoices_fixed) == (0, 0)
        assert report.terminal_ids == [voided_here]
        assert report.invoice_changes == [
            {"invoice_id": voided_here, "account": None, "kind": "terminal_here", "stripe_status": "open"}
        ]
    assert conn.execute("SELECT status FROM invoices WHERE id = %s", (voided_here,)).fetchone()["status"] == "void"


def test_invoice_figures_reach_the_json_and_the_runs_table(conn, broker):
    with running_simulator(start=int(time.time()) - 20 * DAY) as (sim, url):
        settings = dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=url)
        check_the_invoice_figures(conn, sim, api_for(url), create_app(settings, commands=True).test_cli_runner())


def check_the_invoice_figures(conn, sim, api, cli):
    paid_there, paid = open_invoice(sim, "p@example.com")
    _, voided_here = open_invoice(sim, "v@example.com")
    run(api)
    sim.pay_open_invoice(paid_there)  # its webhooks lost
    conn.execute("UPDATE invoices SET status = 'void' WHERE id = %s", (voided_here,))

    dry = json.loads(cli.invoke(args=["reconcile", "run", "--dry-run", "--json"]).stdout)
    (change,) = [c for c in dry["invoice_changes"] if c["invoice_id"] == paid]
    assert change["changes"]["status"] == ["open", "paid"]
    assert (dry["invoices_drifted"], dry["invoices_fixed"], dry["ledger_added"]) == (1, 0, 1)
    assert conn.execute("SELECT status FROM invoices WHERE id = %s", (paid,)).fetchone()["status"] == "open"

    result = cli.invoke(args=["reconcile", "run", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    figures = ("invoices_scanned", "invoices_drifted", "invoices_fixed", "ledger_added", "terminal_here")
    assert {name: document[name] for name in figures} == {
        "invoices_scanned": 2,
        "invoices_drifted": 1,
        "invoices_fixed": 1,
        "ledger_added": 1,
        "terminal_here": 1,
    }
    stored = conn.execute("SELECT * FROM reconciliation_runs WHERE id = %s", (document["run_id"],)).fetchone()
    assert {name: stored[name] for name in figures} == {name: document[name] for name in figures}
    assert stored["accounts"]["platform"]["invoices_fixed"] == 1
