"""Entitlements: each customer's active entitlements, as Stripe's summaries and API say, whatever the delivery.

Through the receiver (real HTTP, signed deliveries from the simulator), the
worker (a Dramatiq worker whose Stripe client is the simulator's, or its
apply function called alone) and real PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import GRACE, SECRET, apply, event_row, post_event
from pipeline import drain, receiver, worker
from sim import DAY, SIM_KEY, api_for, running_simulator

from subsync import config, db
from subsync.stripe_api import StripeApi
from worker import app
from worker.apply import apply_events

SUMMARY = "entitlements.active_entitlement_summary.updated"
TWELVE = [f"feature-{n:02d}" for n in range(12)]


def attach(sim: Any, product: str, keys: list[str], account: str | None = None) -> dict[str, str]:
    """New features `keys`, attached to `product`: their ids by lookup key."""
    ids = {}
    for key in keys:
        ids[key] = sim.create_feature(key, key.title(), account=account)["id"]
        sim.attach_feature(product, ids[key], account=account)
    return ids


def ours(conn: Any, customer: str) -> list[str]:
    rows = conn.execute(
        "SELECT lookup_key FROM customer_entitlements WHERE customer_id = %s ORDER BY lookup_key", (customer,)
    ).fetchall()
    return [r["lookup_key"] for r in rows]


def gate(conn: Any, customer: str) -> dict[str, Any] | None:
    """The README's gating query."""
    return conn.execute("SELECT access, features FROM customer_access WHERE customer_id = %s", (customer,)).fetchone()


def mismatches(conn: Any, sim: Any, customers: dict[str, str | None]) -> list[str]:
    """Each customer's entitlements here (table and view) against every active entitlement Stripe has."""
    problems = []
    for customer, account in customers.items():
        truth = sim.entitled_lookup_keys(customer, account=account)
        if ours(conn, customer) != truth:
            problems.append(f"{customer}: ours {ours(conn, customer)}, Stripe's {truth}")
        row = gate(conn, customer)
        if row is None or row["features"] != truth:
            problems.append(f"{customer}: customer_access says {row}, Stripe's {truth}")
    return problems


def summaries(sim: Any, customer: str, account: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in sim.all_events(account=account)
        if e["type"] == SUMMARY and e["data"]["object"]["customer"] == customer
    ]


@contextmanager
def pipeline(conn: Any, broker: Any, *, thin: bool = False, **delivery: Any) -> Iterator[tuple[Any, StripeApi]]:
    """Receiver, simulator delivering to it, a worker whose Stripe client is the simulator; yields it and a client."""
    with receiver() as url:
        endpoints = {"thin_webhook_urls": [url]} if thin else {"webhook_urls": [url]}
        # The simulator's clock starts 40 days ago: a month can pass before now.
        with running_simulator(webhook_secret=SECRET, delivery=delivery, **endpoints) as (sim, sim_url):
            settings = dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=sim_url)
            with worker(app.build(settings)):
                yield sim, api_for(sim_url)


@pytest.fixture
def stripe_sim(conn, broker):
    with running_simulator(start=int(time.time()) - 20 * DAY) as (sim, url):
        yield sim, api_for(url, library_retries=False)


def test_a_summary_of_more_than_ten_features_ends_with_every_feature(conn, broker):
    with pipeline(conn, broker) as (sim, _):
        attach(sim, "prod_premium", TWELVE)
        customer = sim.create_customer(email="twelve@example.com")["id"]
        sim.create_subscription(customer, trial_days=14)
        drain(conn, sim)
        [event] = summaries(sim, customer)
        assert event["data"]["object"]["entitlements"]["has_more"] is True  # Stripe showed 10
        assert event_row(conn, event["id"])["status"] == "processed"
        assert ours(conn, customer) == TWELVE
        assert gate(conn, customer) == {"access": "full", "features": TWELVE}
        # Its Stripe time is the API answer's: the list is the state now.
        stamped = conn.execute(
            "SELECT DISTINCT stripe_updated_at FROM customer_entitlements WHERE customer_id = %s", (customer,)
        ).fetchall()
        assert [r["stripe_updated_at"].timestamp() for r in stamped] == [sim.now()]


def test_a_feature_removed_in_stripe_disappears(conn, broker):
    with pipeline(conn, broker) as (sim, _):
        ids = attach(sim, "prod_premium", TWELVE)
        few = sim.create_customer(email="few@example.com")["id"]
        many = sim.create_customer(email="many@example.com")["id"]
        sim.create_subscription(many)
        sim.detach_feature("prod_premium", ids["feature-03"])
        sim.detach_feature("prod_premium", ids["feature-04"])
        sim.detach_feature("prod_premium", ids["feature-05"])
        sim.create_subscription(few)  # nine: its summary shows them all
        drain(conn, sim)
        assert len(ours(conn, many)) == 12
        assert len(ours(conn, few)) == 9
        sim.detach_feature("prod_premium", ids["feature-07"])
        sim.advance(31 * DAY)  # each renews with the product's features as they are now
        drain(conn, sim)
        assert mismatches(conn, sim, {few: None, many: None}) == []
        assert "feature-07" not in ours(conn, many)
        assert len(ours(conn, many)) == 8


def test_duplicated_reordered_resent_deliveries_end_in_stripes_entitlements(conn, broker):
    chaos = {"duplicate_rate": 0.3, "resend_rate": 0.1, "reorder_window": 12, "reorder_hold": 0.3, "concurrency": 4}
    with pipeline(conn, broker, **chaos) as (sim, _):
        attach(sim, "prod_premium", TWELVE[:5])  # no summary here is cut short: each is applied as it came
        attach(sim, "prod_addon", ["support", "audit-log"])
        customers: dict[str, str | None] = {}
        for i in range(10):
            customer = sim.create_customer(email=f"c{i}@example.com")["id"]
            customers[customer] = None
            sub = sim.create_subscription(customer, trial_days=7 if i % 2 else None)
            # Granted, then more, in the same second: only each summary's
            # own account of the set before it orders the two.
            added = sim.update_subscription_items(sub["id"], add=[{"price": "price_addon_monthly"}])
            sim.advance(1)
            if i % 3 == 0:
                addon = next(it["id"] for it in added["items"]["data"] if it["price"]["id"] == "price_addon_monthly")
                sim.update_subscription_items(sub["id"], remove=[addon])
            if i % 4 == 1:
                sim.cancel_subscription(sub["id"])
            sim.advance(3600)
        drain(conn, sim)
        assert sim.delivery_stats()["duplicated"] > 0
        assert mismatches(conn, sim, customers) == []
        statuses = {r["status"] for r in conn.execute("SELECT DISTINCT status FROM stripe_events")}
        assert statuses <= {"processed", "ignored"}


def test_an_older_summary_after_a_newer_one_changes_nothing(client, conn, stripe_sim):
    sim, _ = stripe_sim
    attach(sim, "prod_premium", ["api"])
    customer = sim.create_customer(email="late@example.com")["id"]
    sub = sim.create_subscription(customer)
    sim.advance(60)
    sim.cancel_subscription(sub["id"])
    granted, revoked = summaries(sim, customer)
    post_event(client, revoked)
    assert apply(revoked["id"]) == "processed"
    assert (ours(conn, customer), gate(conn, customer)["features"]) == ([], [])
    post_event(client, granted)  # delivered late
    assert apply(granted["id"]) == "processed"
    assert ours(conn, customer) == []
    watermark = conn.execute("SELECT stripe_updated_at FROM entitlement_summaries").fetchone()["stripe_updated_at"]
    assert watermark.timestamp() == revoked["created"]
    assert post_event(client, revoked).get_json()["duplicate"] is True


def test_a_connected_accounts_entitlements_are_listed_on_that_account(conn, broker):
    with pipeline(conn, broker) as (sim, _):
        account = sim.create_account()["id"]
        attach(sim, "prod_premium", TWELVE, account=account)
        customer = sim.create_customer(email="connect@example.com", account=account)["id"]
        sim.create_subscription(customer, account=account)
        sim.advance(int(time.time()) - 60 - sim.now())  # renewed: a month went by
        drain(conn, sim)
        assert mismatches(conn, sim, {customer: account}) == []
        accounts = conn.execute(
            "SELECT DISTINCT account FROM customer_entitlements WHERE customer_id = %s", (customer,)
        ).fetchall()
        assert [r["account"] for r in accounts] == [account]
        row = conn.execute("SELECT account, access FROM customer_access WHERE customer_id = %s", (customer,)).fetchone()
        assert row == {"account": account, "access": "full"}


def test_summaries_delivered_as_thin_events_end_in_stripes_entitlements(conn, broker):
    with pipeline(conn, broker, thin=True, duplicate_rate=0.2, reorder_window=8) as (sim, _):
        attach(sim, "prod_premium", TWELVE[:9])
        attach(sim, "prod_addon", ["support", "audit-log", "export"])
        customers: dict[str, str | None] = {}
        for i in range(4):
            customer = sim.create_customer(email=f"t{i}@example.com")["id"]
            customers[customer] = None
            sub = sim.create_subscription(customer)
            sim.update_subscription_items(sub["id"], add=[{"price": "price_addon_monthly"}])  # 12: has_more
            if i == 2:
                sim.cancel_subscription(sub["id"])
        drain(conn, sim)
        assert mismatches(conn, sim, customers) == []
        thin_types = {r["type"] for r in conn.execute("SELECT DISTINCT type FROM stripe_events")}
        assert "v1." + SUMMARY in thin_types


def test_a_thin_summary_delivered_without_its_snapshot_id_is_found_through_the_full_event(client, conn, stripe_sim):
    sim, api = stripe_sim
    attach(sim, "prod_premium", ["api", "sso"])
    customer = sim.create_customer(email="thin@example.com")["id"]
    sim.create_subscription(customer)
    [snapshot] = summaries(sim, customer)
    thin = sim.thin_event_for(snapshot["id"])
    assert thin["related_object"] is None  # a summary has no URL of its own
    bare = {key: value for key, value in thin.items() if key != "snapshot_event"}
    post_event(client, bare)
    [result] = apply_events(db.pool(), [thin["id"]], grace=GRACE, api=api)
    assert result.status == "processed"
    assert ours(conn, customer) == ["api", "sso"]


# --- the nightly reconciliation ------------------------------------------------------


def reconcile(api: Any, **kwargs: Any) -> Any:
    from reconciler import reconcile as reconciliation

    return reconciliation.run(db.pool(), api, grace=GRACE, **kwargs)


def counting(api: Any) -> list[tuple[str, str | None]]:
    """Every request `api` sends from now on, as (path, account): our own client's calls, counted."""
    calls: list[tuple[str, str | None]] = []
    send = api.get

    def get(path: str, *, account: str | None = None, **params: Any) -> Any:
        calls.append((path, account))
        return send(path, account=account, **params)

    api.get = get
    return calls


def test_the_reconciliation_repairs_lost_summaries_and_skips_an_account_without_features(conn, broker):
    with pipeline(conn, broker, drop_types=[SUMMARY]) as (sim, api):  # every summary lost
        ids = attach(sim, "prod_premium", TWELVE)
        entitled = sim.create_customer(email="lost@example.com")["id"]
        sim.create_subscription(entitled)
        lapsed = sim.create_customer(email="lapsed@example.com")["id"]
        lapsed_sub = sim.create_subscription(lapsed)["id"]
        account = sim.create_account()["id"]  # a connected account that uses no Entitlements
        others = [sim.create_customer(email=f"o{i}@example.com", account=account)["id"] for i in range(3)]
        for other in others:
            sim.create_subscription(other, account=account)
        drain(conn, sim)
        assert (ours(conn, entitled), ours(conn, lapsed)) == ([], [])

        calls = counting(api)
        report = reconcile(api)
        assert mismatches(conn, sim, {entitled: None, lapsed: None, **dict.fromkeys(others, account)}) == []
        assert (report.entitlements_scanned, report.entitlements_drifted, report.entitlements_fixed) == (2, 2, 2)
        assert report.entitlements_skipped == 3
        assert report.accounts[account].entitlements_skipped == 3
        on_account = [path for path, on in calls if on == account and "entitlements" in path]
        assert on_account == ["/v1/entitlements/features"]  # one request, not one per customer
        assert {c["customer_id"] for c in report.entitlement_changes} == {entitled, lapsed}
        row = conn.execute("SELECT * FROM reconciliation_runs ORDER BY id DESC LIMIT 1").fetchone()
        assert (row["entitlements_scanned"], row["entitlements_fixed"], row["entitlements_skipped"]) == (2, 2, 3)

        # Lost again: a feature detached (at the next period) and a subscription canceled.
        sim.detach_feature("prod_premium", ids["feature-00"])
        sim.cancel_subscription(lapsed_sub)
        sim.advance(31 * DAY)
        drain(conn, sim)
        dry = reconcile(api, dry_run=True)
        assert (dry.entitlements_drifted, dry.entitlements_fixed) == (2, 0)
        assert len(ours(conn, entitled)) == 12
        fixed = reconcile(api)
        assert (fixed.entitlements_drifted, fixed.entitlements_fixed) == (2, 2)
        assert mismatches(conn, sim, {entitled: None, lapsed: None}) == []
        assert "feature-00" not in ours(conn, entitled)
        assert ours(conn, lapsed) == []
        again = reconcile(api)
        assert (again.entitlements_scanned, again.entitlements_drifted, again.entitlements_fixed) == (2, 0, 0)


def test_the_reconciliation_leaves_a_newer_summary_alone(client, conn, stripe_sim):
    sim, api = stripe_sim
    attach(sim, "prod_premium", ["api"])
    customer = sim.create_customer(email="newer@example.com")["id"]
    sim.create_subscription(customer)
    [summary] = summaries(sim, customer)
    post_event(client, summary)
    apply(summary["id"])
    # Ours is newer than anything Stripe will answer (a summary applied after the list was read).
    conn.execute("UPDATE entitlement_summaries SET stripe_updated_at = stripe_updated_at + interval '1 day'")
    conn.execute("DELETE FROM customer_entitlements")
    report = reconcile(api)
    assert (report.entitlements_scanned, report.entitlements_drifted, report.left_alone_newer) == (1, 0, 1)
    assert ours(conn, customer) == []
