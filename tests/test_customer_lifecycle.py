"""One customer's whole lifecycle, as the application sees it through `customer_access`.

Two subscriptions (Premium, whose 12 features and the add-on's one make a
summary Stripe cuts at 10), an add-on upgraded to yearly, a partial refund,
a chargeback lost, a trial whose payment fails until dunning ends it, a
reactivation run twice, and an access-feed listener that is down for part of
it. Through the real HTTP receiver, a real Dramatiq worker whose Stripe
client is the simulator's, and the simulator delivering with chaos
(duplicates, repeats under new ids, reordering, deliveries in parallel).

Access depends on the wall clock and Stripe's times can never be in the
future, so the story runs from 25 days ago to 10 days ago: every period
that must still be paid for at an assertion ends after the real now, and
each stage's state is Stripe's state (`subscription_mismatches`) as well.

The refund and the lost dispute are checked in the ledger last, in
`_assert_refunds_and_disputes_in_ledger`: those facts are recorded under
`refund:{re_id}` (REFUNDED), `dispute:{du_id}:opened` (DISPUTED) and
`dispute:{du_id}:closed` (DISPUTE_WON, DISPUTE_LOST).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from typing import Any

import pytest
from helpers import SECRET, access_feed_example, wait_for
from pipeline import drain, ledger_mismatches, receiver, subscription_mismatches, worker
from sim import DAY, SIM_KEY, running_simulator

from subsync import config
from subsync.access import owed_amount
from subsync.reactivation import REACTIVATES
from subsync.stripe_objects import parse_invoice, ts
from webhooks import create_app
from worker import app as worker_app

pytestmark = pytest.mark.slow

access_feed = access_feed_example()

PREMIUM_FEATURES = [f"premium-{n:02d}" for n in range(1, 13)]
ADDON_FEATURE = "priority-support"
EVERY_FEATURE = sorted([*PREMIUM_FEATURES, ADDON_FEATURE])
PREMIUM_PRICE = 2999  # price_premium_monthly
REFUNDED = 1000
CHAOS = {"duplicate_rate": 0.2, "resend_rate": 0.1, "reorder_window": 16, "reorder_hold": 0.3, "concurrency": 4}
SUMMARY = "entitlements.active_entitlement_summary.updated"
GATE = "SELECT access, features FROM customer_access WHERE customer_id = %s"


class Feed:
    """The documented reader (docs/examples/access_feed.py) on a thread, as an application runs it: started,
    stopped, started again from its last processed id (its cursor table); `handled` is every change it handled."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.handled: list[int] = []
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        def handle(_conn: Any, change: dict[str, Any]) -> None:
            self.handled.append(change["id"])

        self.stopped = threading.Event()
        self.thread = threading.Thread(
            target=access_feed.follow,
            args=(self.database_url, handle),
            kwargs={"name": "lifecycle", "stop": self.stopped.is_set, "wait_s": 0.2},
            daemon=True,
        )
        self.thread.start()

    def stop(self) -> None:
        if self.thread is None:
            return
        self.stopped.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the listener did not stop"
        self.thread = None

    def caught_up(self, conn: Any) -> None:
        """It has handled every change in `access_changes`, each once, in id order."""
        with contextlib.suppress(AssertionError):
            wait_for(lambda: len(self.handled) >= len(fed(conn)), timeout=10)
        assert self.handled == fed(conn)


def seen(conn: Any, customer: str) -> dict[str, Any]:
    """What the application's gating query answers, and what the customer owes."""
    row = conn.execute(GATE, (customer,)).fetchone()
    owed = conn.execute("SELECT owed_amount FROM customer_access WHERE customer_id = %s", (customer,)).fetchone()
    return {"access": row["access"], "features": row["features"], "owed_amount": owed["owed_amount"]}


def access_of(conn: Any, sub: str) -> tuple[str, int | None]:
    row = conn.execute("SELECT access, owed_amount FROM subscriptions WHERE id = %s", (sub,)).fetchone()
    return row["access"], row["owed_amount"]


def delivered(conn: Any, sim: Any) -> None:
    """Everything delivered and applied, and our state equal to Stripe's at this point of the story."""
    drain(conn, sim)
    assert subscription_mismatches(conn, sim) == []


def grant(sim: Any, product: str, keys: list[str]) -> None:
    for key in keys:
        sim.attach_feature(product, sim.create_feature(key, key.replace("-", " ").title())["id"])


def reactivate(commands: Any, sub: str) -> dict[str, Any]:
    result = commands.test_cli_runner().invoke(args=["subscriptions", "reactivate", sub, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def expected_owed(sim: Any, sub: str) -> int:
    """The owed amount by the documented rule, from Stripe's objects: the open invoice's service share used."""
    old = sim.get_subscription(sub)
    unpaid = parse_invoice(sim.get_invoice(old["latest_invoice"]))
    assert unpaid.status == "open"
    assert unpaid.period_start is not None
    assert unpaid.period_end is not None
    ended_at = ts(old["ended_at"])
    assert ended_at is not None
    return owed_amount(unpaid.amount_due, unpaid.period_start, unpaid.period_end, ended_at)


def test_a_customers_lifecycle_reads_right_in_customer_access_and_the_feed_misses_and_repeats_nothing(
    conn, broker, database_url
):
    feed = Feed(database_url)
    with (
        receiver() as url,
        running_simulator(
            start=int(time.time()) - 25 * DAY, seed=11, webhook_urls=[url], webhook_secret=SECRET, delivery=CHAOS
        ) as (sim, base),
    ):
        settings = dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=base)
        try:
            feed.start()  # before the first change
            with worker(worker_app.build(settings)):
                _lifecycle(conn, sim, create_app(settings, commands=True), feed)
        finally:
            feed.stop()
            conn.execute("DROP TABLE IF EXISTS app_access_cursor")


def _lifecycle(conn: Any, sim: Any, commands: Any, feed: Feed) -> None:
    customer, addon, premium, first_addon_invoice = _sign_up(conn, sim)
    refund = _upgrade_and_refund(sim, addon)
    _trial_payment_fails(conn, sim, customer, premium)

    # (e) The application goes down; the feed goes on without it.
    feed.caught_up(conn)
    feed.stop()
    handled_before = list(feed.handled)

    dispute = _chargeback_lost_and_addon_canceled(conn, sim, customer, addon, first_addon_invoice)
    debt = _dunning_ends(conn, sim, customer, premium)

    # (e) Back up, from its last processed id: what it missed is there to read.
    assert feed.handled == handled_before
    assert fed(conn)[len(handled_before) :], "nothing changed while the listener was down"
    feed.start()

    _reactivated_twice(conn, sim, commands, customer=customer, premium=premium, addon=addon, debt=debt)

    # (e) Every change of the lifecycle, each once, in order.
    feed.caught_up(conn)
    feed.stop()

    # (f) The ledger, exact under duplicates and reordering.
    stats = sim.delivery_stats()
    assert (stats["duplicated"] > 0, stats["resent"] > 0) == (True, True), stats
    assert ledger_mismatches(conn, sim) == []
    _assert_refunds_and_disputes_in_ledger(conn, customer, refund=refund, dispute=dispute)


def _sign_up(conn: Any, sim: Any) -> tuple[str, str, str, str]:
    """(a) The add-on, paid monthly, then Premium on a 7-day trial: 13 features, more than a summary shows."""
    grant(sim, "prod_premium", PREMIUM_FEATURES)
    grant(sim, "prod_addon", [ADDON_FEATURE])
    customer = sim.create_customer(email="lifecycle@example.com")["id"]
    addon = sim.create_subscription(customer, price="price_addon_monthly")["id"]
    premium = sim.create_subscription(customer, trial_days=7)["id"]
    delivered(conn, sim)
    [*_, summary] = [e for e in sim.all_events(SUMMARY) if e["data"]["object"]["customer"] == customer]
    shown = summary["data"]["object"]["entitlements"]
    assert (len(shown["data"]), shown["has_more"]) == (10, True)
    assert seen(conn, customer) == {"access": "full", "features": EVERY_FEATURE, "owed_amount": 0}
    return customer, addon, premium, sim.get_subscription(addon)["latest_invoice"]


def _upgrade_and_refund(sim: Any, addon: str) -> str:
    """(c) The add-on goes yearly (charged at once); 10.00 of that charge is refunded."""
    sim.advance(3600)
    sim.change_subscription_price(addon, "price_addon_yearly")
    yearly_invoice = sim.get_subscription(addon)["latest_invoice"]
    assert sim.get_invoice(yearly_invoice)["status"] == "paid"
    return str(sim.refund(yearly_invoice, amount=REFUNDED)["id"])


def _trial_payment_fails(conn: Any, sim: Any, customer: str, premium: str) -> None:
    """(b) The card fails from the trial's end on: Premium is past_due; the add-on still gives full access."""
    sim.fail_next_payments(customer, until_new_card=True)
    sim.advance(7 * DAY + 2 * 3600)
    delivered(conn, sim)
    assert sim.get_subscription(premium)["status"] == "past_due"
    assert access_of(conn, premium) == ("restricted", None)
    assert seen(conn, customer) == {"access": "full", "features": EVERY_FEATURE, "owed_amount": 0}


def _chargeback_lost_and_addon_canceled(conn: Any, sim: Any, customer: str, addon: str, invoice: str) -> str:
    """(c) The add-on's first charge is charged back and the dispute lost; the merchant cancels the add-on."""
    dispute = sim.dispute(invoice)["id"]
    sim.close_dispute(dispute, won=False)
    sim.cancel_subscription(addon)
    delivered(conn, sim)
    assert access_of(conn, addon) == ("none", None)
    # Stripe keeps a past_due subscription's features: access says they are not paid for.
    assert seen(conn, customer) == {"access": "restricted", "features": PREMIUM_FEATURES, "owed_amount": 0}
    return str(dispute)


def _dunning_ends(conn: Any, sim: Any, customer: str, premium: str) -> int:
    """(b) Three retries fail over 7 days: dunning cancels Premium, which owes the days used."""
    sim.advance(7 * DAY + 3600)
    delivered(conn, sim)
    assert sim.get_subscription(premium)["status"] == "canceled"
    debt = expected_owed(sim, premium)
    assert 0 < debt < PREMIUM_PRICE
    assert access_of(conn, premium) == ("suspended", debt)
    assert seen(conn, customer) == {"access": "suspended", "features": [], "owed_amount": debt}
    return debt


def _reactivated_twice(
    conn: Any, sim: Any, commands: Any, *, customer: str, premium: str, addon: str, debt: int
) -> None:
    """(d) A new card, and `subscriptions reactivate` run twice: one invoice item, one subscription, no trial."""
    sim.attach_new_card(customer)
    done, again = reactivate(commands, premium), reactivate(commands, premium)
    assert (done["already"], again["already"]) == (False, True)
    assert (again["new_subscription_id"], again["invoice_item_id"]) == (
        done["new_subscription_id"],
        done["invoice_item_id"],
    )
    [item] = sim.list_invoice_items(customer=customer)["data"]
    assert (item["id"], item["amount"], item["metadata"]) == (done["invoice_item_id"], debt, {REACTIVATES: premium})
    subs = sim.list_subscriptions(customer=customer, status="all")["data"]
    assert sorted(s["id"] for s in subs) == sorted([addon, premium, done["new_subscription_id"]])
    back = sim.get_subscription(done["new_subscription_id"])
    assert (back["status"], back["trial_end"]) == ("active", None)
    first_invoice = sim.get_invoice(back["latest_invoice"])
    assert (first_invoice["status"], first_invoice["amount_paid"]) == ("paid", PREMIUM_PRICE + debt)

    delivered(conn, sim)  # its first invoice, paid, delivered as a webhook: the debt is settled
    assert access_of(conn, premium) == ("suspended", 0)
    assert access_of(conn, back["id"]) == ("full", None)
    assert seen(conn, customer) == {"access": "full", "features": PREMIUM_FEATURES, "owed_amount": 0}


def fed(conn: Any) -> list[int]:
    return [r["id"] for r in conn.execute("SELECT id FROM access_changes ORDER BY id")]


def _assert_refunds_and_disputes_in_ledger(conn: Any, customer: str, *, refund: str, dispute: str) -> None:
    """The refund and the lost dispute, each once, under their fact keys."""
    rows = conn.execute(
        "SELECT fact_key, status, amount FROM payments WHERE customer_id = %s AND status LIKE ANY(%s) ORDER BY id",
        (customer, ["REFUNDED", "DISPUTE%"]),
    ).fetchall()
    facts = {r["fact_key"]: (r["status"], r["amount"]) for r in rows}
    assert len(facts) == len(rows)
    assert facts.get(f"refund:{refund}") == ("REFUNDED", REFUNDED)
    assert facts.get(f"dispute:{dispute}:opened", ("?",))[0] == "DISPUTED"
    assert facts.get(f"dispute:{dispute}:closed", ("?",))[0] == "DISPUTE_LOST"
