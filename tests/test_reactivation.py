"""`subscriptions reactivate`: a suspended customer comes back without a trial and pays what they owe, once.

Through the simulator (dunning ends a subscription, webhooks delivered to
the receiver over HTTP), the worker, real PostgreSQL and Redis, and the
command run as an operator runs it.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import SECRET
from pipeline import drain, receiver, worker
from sim import DAY, SIM_KEY, running_simulator

from subsync import config
from subsync.reactivate import Reactivation
from subsync.reactivate import reactivate as run_reactivation
from subsync.reactivation import REACTIVATES
from subsync.stripe_api import make_api
from webhooks import create_app, services
from worker import app as worker_app


@contextmanager
def product(conn: Any, broker: Any, *, deliver: bool = True) -> Any:
    """The simulator (clock 40 days ago) delivering to the receiver, a worker, and the operator's commands."""
    with (
        receiver() as url,
        running_simulator(start=int(time.time()) - 40 * DAY, webhook_urls=[url], webhook_secret=SECRET) as (sim, base),
    ):
        settings = dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=base)
        with worker(worker_app.build(settings)) if deliver else _nothing():
            yield sim, create_app(settings, commands=True)


@contextmanager
def _nothing() -> Any:
    yield


def suspend(sim: Any, conn: Any) -> tuple[str, str]:
    """A customer whose card fails from the first renewal on, until dunning cancels the subscription."""
    cus = sim.create_customer(email="back@example.com")["id"]
    sub = sim.create_subscription(cus)["id"]
    sim.fail_next_payments(cus, until_new_card=True)
    sim.advance(31 * DAY + 8 * DAY)  # the renewal, then 3 retries over 7 days; dunning cancels
    drain(conn, sim)
    row = conn.execute("SELECT access, owed_amount FROM subscriptions WHERE id = %s", (sub,)).fetchone()
    assert row["access"] == "suspended", row
    assert row["owed_amount"] > 0, row
    return cus, sub


def reactivate(app: Any, sub: str, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["subscriptions", "reactivate", sub, *args])


def owed(conn: Any, sub: str) -> int | None:
    return conn.execute("SELECT owed_amount FROM subscriptions WHERE id = %s", (sub,)).fetchone()["owed_amount"]


def test_run_twice_it_makes_one_item_of_the_owed_amount_and_one_subscription_without_trial(conn, broker):
    with product(conn, broker) as (sim, app):
        cus, old = suspend(sim, conn)
        debt = owed(conn, old)
        sim.attach_new_card(cus)
        first, second = reactivate(app, old, "--json"), reactivate(app, old, "--json")
        assert first.exit_code == 0, first.output
        assert second.exit_code == 0, second.output
        done, again = json.loads(first.stdout), json.loads(second.stdout)
        assert again["already"] is True
        assert again["new_subscription_id"] == done["new_subscription_id"]
        assert again["invoice_item_id"] == done["invoice_item_id"]

        [item] = sim.list_invoice_items(customer=cus)["data"]
        assert (item["amount"], item["metadata"]) == (debt, {REACTIVATES: old})
        assert item["description"].startswith(f"Unpaid use of {old}: ")
        subs = [s for s in sim.list_subscriptions(customer=cus, status="all")["data"] if s["id"] != old]
        assert [s["id"] for s in subs] == [done["new_subscription_id"]]
        new = subs[0]
        assert (new["status"], new["trial_end"]) == ("active", None)
        # Its first invoice charges the new period and the days used.
        first_invoice = sim.get_invoice(new["latest_invoice"])
        assert (first_invoice["status"], first_invoice["amount_paid"]) == ("paid", 2999 + debt)

        drain(conn, sim)
        assert owed(conn, old) == 0
        audit = conn.execute(
            "SELECT source, source_id, before, after FROM subscription_changes WHERE subscription_id = %s"
            " ORDER BY id DESC LIMIT 1",
            (old,),
        ).fetchone()
        assert (audit["source"], audit["source_id"]) == ("reactivate", new["id"])
        assert (audit["before"]["owed_amount"], audit["after"]["owed_amount"]) == (debt, 0)
        status = conn.execute("SELECT status FROM reactivations WHERE subscription_id = %s", (old,)).fetchone()
        assert status["status"] == "settled"
        access = conn.execute("SELECT access FROM subscriptions WHERE id = %s", (new["id"],)).fetchone()
        assert access["access"] == "full"
        shown = app.test_cli_runner().invoke(args=["subscriptions", "show", old])
        [line] = [line for line in shown.output.splitlines() if line.startswith("reactivated as")]
        assert f" {new['id']}, settled (by " in line


def in_a_thread(app: Any, sub: str, start: threading.Barrier | None = None) -> Reactivation:
    """What the command runs, as a second operator's run does: its own pool connection and Stripe client."""
    with app.app_context():
        web = services.current()
        api = make_api(web.settings)
        if start is not None:
            start.wait()
        return run_reactivation(web.pool, api, sub, requested_by="other@example.com")


def made_for(sim: Any, cus: str, old: str) -> tuple[list[Any], list[Any]]:
    """The invoice items and the subscriptions other than `old` the customer has in Stripe."""
    items = sim.list_invoice_items(customer=cus)["data"]
    return items, [s for s in sim.list_subscriptions(customer=cus, status="all")["data"] if s["id"] != old]


def test_two_runs_at_once_make_one_item_of_the_owed_amount_and_one_subscription(conn, broker):
    with product(conn, broker) as (sim, app):
        cus, old = suspend(sim, conn)
        debt = owed(conn, old)
        sim.attach_new_card(cus)
        # Stripe is slow to make each object: the second run lists none yet, and sends
        # the first's idempotency key while its request is in flight (a 409 the library retries).
        sim.set_latency("/v1/invoiceitems", 1.0)
        sim.set_latency("/v1/subscriptions", 1.0)
        start = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(in_a_thread, app, old, start) for _ in range(2)]
            done = [run.result() for run in runs]
        assert len({(d.invoice_item_id, d.new_subscription_id) for d in done}) == 1
        items, subs = made_for(sim, cus, old)
        assert [(i["id"], i["amount"]) for i in items] == [(done[0].invoice_item_id, debt)]
        assert [s["id"] for s in subs] == [done[0].new_subscription_id]
        assert sim.get_invoice(subs[0]["latest_invoice"])["amount_paid"] == 2999 + debt
        drain(conn, sim)
        assert owed(conn, old) == 0


def test_a_run_while_another_is_still_asking_stripe_exits_1_having_made_nothing(conn, broker):
    with product(conn, broker) as (sim, app):
        cus, old = suspend(sim, conn)
        sim.attach_new_card(cus)
        sim.set_latency("/v1/invoiceitems", 5.0)  # longer than the library retries a 409
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(in_a_thread, app, old)
            while sim.settings()["latency"]:  # until the first run's request is in flight
                time.sleep(0.01)
            second = reactivate(app, old)
            done = first.result()
        assert second.exit_code == 1
        # Stripe's 409, which the library raises as an APIError once its retries are spent.
        assert "the reactivation failed: APIError: " in second.output
        assert "There is currently another in-progress request using this Idempotent Key" in second.output
        items, subs = made_for(sim, cus, old)
        assert ([i["id"] for i in items], [s["id"] for s in subs]) == (
            [done.invoice_item_id],
            [done.new_subscription_id],
        )
        again = reactivate(app, old)
        assert again.exit_code == 0, again.output
        assert f"{old} reactivated as {done.new_subscription_id} (made by an earlier run" in again.output


def test_the_owed_amount_stays_until_the_first_invoice_is_paid_and_a_later_invoice_event_keeps_it_zero(conn, broker):
    with product(conn, broker) as (sim, app):
        cus, old = suspend(sim, conn)
        debt = owed(conn, old)
        # The card still fails: the new subscription's first invoice is not paid.
        result = reactivate(app, old, "--json")
        assert result.exit_code == 0, result.output
        new = json.loads(result.stdout)["new_subscription_id"]
        drain(conn, sim)
        assert owed(conn, old) == debt
        assert sim.get_subscription(new)["status"] == "incomplete"

        sim.attach_new_card(cus)
        sim.pay_open_invoice(new)
        drain(conn, sim)
        assert owed(conn, old) == 0
        # The old invoice stays open in Stripe; anything said of it later leaves the debt settled.
        sim.update_customer(cus, name="Back Again")
        sim.advance(DAY)
        drain(conn, sim)
        result = app.test_cli_runner().invoke(args=["reconcile", "run", "--json"])
        assert result.exit_code == 0, result.output
        assert owed(conn, old) == 0


def test_a_failed_run_run_again_reuses_the_invoice_item_and_charges_once(conn, broker):
    with product(conn, broker) as (sim, app):
        cus, old = suspend(sim, conn)
        sim.attach_new_card(cus)
        failed = reactivate(app, old, "--price", "price_does_not_exist")
        assert failed.exit_code == 1
        assert "the reactivation failed" in failed.output
        assert len(sim.list_invoice_items(customer=cus)["data"]) == 1
        result = reactivate(app, old, "--json")
        assert result.exit_code == 0, result.output
        assert len(sim.list_invoice_items(customer=cus)["data"]) == 1
        new = json.loads(result.stdout)["new_subscription_id"]
        assert sim.get_invoice(sim.get_subscription(new)["latest_invoice"])["amount_paid"] == 2999 + owed(conn, old)


def test_a_subscription_an_earlier_run_made_is_found_and_a_first_invoice_paid_already_settles_at_once(conn, broker):
    with product(conn, broker) as (sim, app):
        cus, old = suspend(sim, conn)
        sim.attach_new_card(cus)
        # As if a run died after Stripe made the subscription, before it was recorded here:
        # its first invoice's webhook arrives with no reactivation recorded yet.
        made = sim.create_subscription(cus, trial_end="now", metadata={REACTIVATES: old})["id"]
        drain(conn, sim)
        assert owed(conn, old) > 0
        result = reactivate(app, old, "--json")
        assert result.exit_code == 0, result.output
        done = json.loads(result.stdout)
        assert (done["new_subscription_id"], done["status"]) == (made, "settled")
        assert owed(conn, old) == 0
        assert len([s for s in sim.list_subscriptions(customer=cus, status="all")["data"] if s["id"] != old]) == 1


def test_a_dry_run_says_what_it_would_ask_and_asks_nothing(conn, broker):
    with product(conn, broker) as (sim, app):
        cus, old = suspend(sim, conn)
        result = reactivate(app, old, "--dry-run")
        assert result.exit_code == 0, result.output
        assert "would create an invoice item of" in result.output
        assert "a subscription on price_premium_monthly x1" in result.output
        assert sim.list_invoice_items(customer=cus)["data"] == []
        assert conn.execute("SELECT count(*) AS n FROM reactivations").fetchone()["n"] == 0


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("active", "is not suspended (its access is "),
        ("missing", "no subscription sub_missing here"),
    ],
)
def test_what_cannot_be_reactivated_exits_1_with_the_reason(conn, broker, setup, message):
    with product(conn, broker) as (sim, app):
        if setup == "active":
            sub = sim.create_subscription(sim.create_customer()["id"])["id"]
            drain(conn, sim)
        else:
            sub = "sub_missing"
        result = reactivate(app, sub)
        assert result.exit_code == 1
        assert message in result.output
