"""`customer_access`: what the application gates on, per customer, in one indexed lookup.

The view's rules against subsync.access (every pair of access values), its
answers through the receiver, worker and simulator, and its plan on a
populated database.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

import pytest
from helpers import SECRET
from pipeline import drain, receiver, worker
from processes import ROOT
from sim import DAY, running_simulator

from subsync.access import ACCESS_RANKING, Access, access_ranking_sql, best_access
from subsync.store import entitlements

GATE = "SELECT access, features FROM customer_access WHERE customer_id = %s"


def add_subscription(conn: Any, sub_id: str, customer: str, access: Access, owed: int | None = None) -> None:
    conn.execute(
        "INSERT INTO subscriptions (id, customer_id, status, access, owed_amount, stripe_updated_at)"
        " VALUES (%s, %s, 'active', %s, %s, now())",
        (sub_id, customer, access.value, owed),
    )


def test_the_view_ranks_access_as_subsync_access_does(conn):
    assert (ROOT / "schema.sql").read_text().count(access_ranking_sql()) == 2
    pairs = list(itertools.combinations_with_replacement(ACCESS_RANKING, 2))
    for n, (first, second) in enumerate(pairs):
        add_subscription(conn, f"sub_{n}_a", f"cus_{n}", first)
        add_subscription(conn, f"sub_{n}_b", f"cus_{n}", second)
    for n, (first, second) in enumerate(pairs):
        assert conn.execute(GATE, (f"cus_{n}",)).fetchone()["access"] == best_access([first, second])


def test_a_customer_without_subscriptions_has_none_no_features_and_owes_nothing(conn):
    conn.execute("INSERT INTO customers (id, stripe_updated_at, account) VALUES ('cus_new', now(), 'acct_1')")
    assert entitlements.customer_access(conn, "cus_new") == {
        "customer_id": "cus_new",
        "account": "acct_1",
        "access": "none",
        "features": [],
        "owed_amount": 0,
    }
    assert entitlements.customer_access(conn, "cus_unknown") is None


def test_owed_amounts_add_up_over_the_subscriptions_and_features_are_sorted(conn):
    add_subscription(conn, "sub_1", "cus_1", Access.SUSPENDED, owed=1500)
    add_subscription(conn, "sub_2", "cus_1", Access.SUSPENDED, owed=250)
    add_subscription(conn, "sub_3", "cus_1", Access.NONE)
    conn.execute("INSERT INTO entitlement_summaries (customer_id, stripe_updated_at) VALUES ('cus_1', now())")
    conn.execute(
        "INSERT INTO customer_entitlements (customer_id, feature_id, lookup_key, stripe_updated_at)"
        " VALUES ('cus_1', 'feat_1', 'sso', now()), ('cus_1', 'feat_2', 'api', now())"
    )
    row = entitlements.customer_access(conn, "cus_1")
    assert (row["access"], row["features"], row["owed_amount"]) == ("suspended", ["api", "sso"], 1750)
    # Known only from its entitlements: still a row.
    conn.execute("INSERT INTO entitlement_summaries (customer_id, stripe_updated_at) VALUES ('cus_2', now())")
    assert conn.execute(GATE, ("cus_2",)).fetchone() == {"access": "none", "features": []}


def test_two_subscriptions_in_different_states_and_their_features_through_the_pipeline(conn, broker):
    with (
        receiver() as url,
        worker(broker),
        running_simulator(start=int(time.time()) - 40 * DAY, webhook_urls=[url], webhook_secret=SECRET) as (sim, _),
    ):
        for key in ("api", "sso"):
            sim.attach_feature("prod_premium", sim.create_feature(key, key.upper())["id"])
        sim.attach_feature("prod_addon", sim.create_feature("audit-log", "Audit log")["id"])
        customer = sim.create_customer(email="two@example.com")["id"]
        monthly = sim.create_subscription(customer, price="price_premium_monthly")["id"]
        yearly = sim.create_subscription(customer, price="price_addon_yearly")["id"]
        bystander = sim.create_customer(email="none@example.com")["id"]
        sim.fail_next_payments(customer, until_new_card=True)
        sim.advance(31 * DAY + 3600)  # the monthly renewal fails; the yearly runs on
        drain(conn, sim)
        subs = {r["id"]: r["access"] for r in conn.execute("SELECT id, access FROM subscriptions")}
        assert (subs[monthly], subs[yearly]) == ("restricted", "full")
        assert conn.execute(GATE, (customer,)).fetchone() == {"access": "full", "features": ["api", "audit-log", "sso"]}
        sim.cancel_subscription(yearly)
        drain(conn, sim)
        # Stripe keeps a past_due subscription's features: access says it is not paid for.
        assert conn.execute(GATE, (customer,)).fetchone() == {"access": "restricted", "features": ["api", "sso"]}
        assert conn.execute(GATE, (bystander,)).fetchone() == {"access": "none", "features": []}


# README, "What changed since I last looked?": the customers whose features may have changed since a time.
FEATURES_SINCE = (
    "SELECT a.customer_id, a.features FROM entitlement_summaries s JOIN customer_access a USING (customer_id)"
    " WHERE s.updated_at > %s"
)


def test_the_readme_query_finds_the_customers_whose_features_changed_since_a_time(conn, broker):
    with (
        receiver() as url,
        worker(broker),
        running_simulator(start=int(time.time()) - 40 * DAY, webhook_urls=[url], webhook_secret=SECRET) as (sim, _),
    ):
        sso = sim.create_feature("sso", "SSO")["id"]
        sim.attach_feature("prod_premium", sso)
        sim.attach_feature("prod_premium", sim.create_feature("api", "API")["id"])
        sim.attach_feature("prod_addon", sim.create_feature("audit-log", "Audit log")["id"])
        customer = sim.create_customer(email="features@example.com")["id"]
        sim.create_subscription(customer, price="price_premium_monthly")
        bystander = sim.create_customer(email="yearly@example.com")["id"]
        sim.create_subscription(bystander, price="price_addon_yearly")
        drain(conn, sim)
        assert conn.execute(GATE, (customer,)).fetchone()["features"] == ["api", "sso"]
        since = conn.execute("SELECT now() AS at").fetchone()["at"]
        sim.detach_feature("prod_premium", sso)
        sim.advance(31 * DAY + 3600)  # the monthly renewal no longer grants sso; the yearly one runs on
        drain(conn, sim)
        assert conn.execute(FEATURES_SINCE, (since,)).fetchall() == [{"customer_id": customer, "features": ["api"]}]
        assert conn.execute(GATE, (bystander,)).fetchone()["features"] == ["audit-log"]


# Large enough that a sequential scan costs far more than an index probe.
CUSTOMERS = 20_000


# The id compared in a scan's index condition: the parameter (a custom or a generic plan's), or the
# customer id the plan already found (`known`'s, which the planner names after customers.id).
CUSTOMER_KEY = re.compile(r"\((?:customer_)?id = (?:'cus_101'::text|\$1|customers\.id)\)")


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += plan_nodes(child)
    return nodes


@pytest.mark.slow
def test_the_gating_query_is_index_lookups_on_a_populated_database(conn):
    with conn.transaction(force_rollback=True):
        conn.execute(
            "INSERT INTO customers (id, stripe_updated_at) SELECT 'cus_' || g, now() FROM generate_series(1, %s) g",
            (CUSTOMERS,),
        )
        conn.execute(
            "INSERT INTO subscriptions (id, customer_id, status, access, owed_amount, stripe_updated_at)"
            " SELECT 'sub_' || g, 'cus_' || (g %% %s), 'active', (ARRAY['full', 'grace', 'none'])[1 + g %% 3],"
            " g %% 7, now() FROM generate_series(1, %s) g",
            (CUSTOMERS, CUSTOMERS * 2),
        )
        conn.execute(
            "INSERT INTO entitlement_summaries (customer_id, stripe_updated_at)"
            " SELECT 'cus_' || g, now() FROM generate_series(1, %s, 2) g",
            (CUSTOMERS,),
        )
        conn.execute(
            "INSERT INTO customer_entitlements (customer_id, feature_id, lookup_key, stripe_updated_at)"
            " SELECT 'cus_' || g, 'feat_' || f, 'key_' || f, now()"
            " FROM generate_series(1, %s, 2) g, generate_series(1, 5) f",
            (CUSTOMERS,),
        )
        conn.execute("ANALYZE customers, subscriptions, entitlement_summaries, customer_entitlements")
        conn.execute("PREPARE gate(text) AS SELECT access, features FROM customer_access WHERE customer_id = $1")
        plans = {}
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            row = conn.execute("EXPLAIN (FORMAT JSON) EXECUTE gate('cus_101')").fetchone()
            raw = row["QUERY PLAN"]
            plans[mode] = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
        answer = conn.execute("EXECUTE gate('cus_101')").fetchone()
        conn.execute("DEALLOCATE gate")
    assert answer["features"] == [f"key_{f}" for f in range(1, 6)]
    for mode, plan in plans.items():
        scans = [n for n in plan_nodes(plan) if "Relation Name" in n or "Index Name" in n]
        for scan in scans:
            # A table or index read only where its key is the one customer's id: the parameter, or the
            # customer the plan has already found, for the lateral lookups of its subscriptions and features.
            cond = scan.get("Index Cond") or scan.get("Recheck Cond") or ""
            where = f"{mode}: {scan['Node Type']} of {scan.get('Relation Name') or scan.get('Index Name')}"
            assert CUSTOMER_KEY.search(cond), f"{where} reads more than one customer's rows ({cond or 'no condition'})"
        read = {n["Relation Name"] for n in scans if "Relation Name" in n}
        assert read == {"customers", "subscriptions", "entitlement_summaries", "customer_entitlements"}, mode
