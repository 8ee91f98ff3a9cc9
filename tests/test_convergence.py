"""A simulated quarter of mixed lifecycles, delivered with chaos (duplicates,
Stripe's repeated events with new ids, reordering, 8 deliveries at once) to the real
receiver and worker (whose Stripe client is the simulator: refunds and disputes
are completed from it), ends exactly in Stripe's state with an exact ledger."""

from __future__ import annotations

import dataclasses
import random
import time

import pytest
from helpers import SECRET
from pipeline import (
    drain,
    invoice_mismatches,
    ledger_mismatches,
    mismatches_after_the_minute_job,
    receiver,
    worker,
)
from sim import DAY, SIM_KEY, running_simulator

from subsync import config
from worker import app

pytestmark = pytest.mark.slow

CUSTOMERS = 100
# Stripe's delivery at its worst, the same for the snapshot and the thin delivery.
CHAOS = {"duplicate_rate": 0.2, "resend_rate": 0.1, "reorder_window": 40, "reorder_hold": 0.5, "concurrency": 8}


def quarter(sim, rng: random.Random, customers: int = CUSTOMERS) -> None:
    """Sign-ups, trials, yearly plans, renewals, failures that recover, dunning
    ending canceled or unpaid, cancellations at period end and at once, pauses,
    checkouts completed, async and expired; in its last weeks refunds (full, two
    partial ones of one charge, pending ones that settle either way) and
    disputes (won, lost, inquiries), on the platform and a connected account."""
    subs = []
    for i in range(customers):
        customer = sim.create_customer(email=f"c{i}@example.com")["id"]
        kind = i % 10
        kwargs = {"trial_days": 14} if kind == 1 else {"price": "price_premium_yearly"} if kind == 2 else {}
        subs.append((customer, sim.create_subscription(customer, **kwargs)["id"], kind))
        sim.advance(rng.randint(60, 6 * 3600))
    for customer, sub, kind in subs:
        if kind == 3:
            sim.fail_next_payments(customer, n=1)  # Smart Retries recovers
        elif kind in (4, 5):
            sim.fail_next_payments(customer, until_new_card=True)  # 4 pays later, 5 ends in dunning
        elif kind == 6:
            sim.cancel_subscription(sub, at_period_end=True)
    # Real accounts' shapes: a monthly base with a yearly add-on, and a connected account's customers.
    account = sim.create_account()["id"]
    extra = []
    for i in range(10):
        on = account if i % 2 else None
        customer = sim.create_customer(email=f"x{i}@example.com", account=on)["id"]
        items = [{"price": "price_premium_monthly"}] + ([{"price": "price_addon_yearly"}] if i < 6 else [])
        extra.append(sim.create_subscription(customer, items=items, billing_mode="flexible", account=on)["id"])
        if i == 3:
            sim.fail_next_payments(customer, n=1, account=on)
        sim.advance(rng.randint(60, 6 * 3600))
    session = sim.create_checkout_session(mode="payment", customer=subs[0][0], amount_total=4900)
    sim.complete_checkout_session(session["id"])
    session = sim.create_checkout_session(mode="payment", customer=subs[1][0], amount_total=1500)
    sim.complete_checkout_session(session["id"], async_payment=True)
    sim.checkout_async_payment(session["id"], succeeded=False)
    session = sim.create_checkout_session(mode="payment", customer=subs[2][0], amount_total=900)
    sim.expire_checkout_session(session["id"])
    end = int(time.time()) - 60
    month = 0
    money = MoneyBack(sim, subs, account, extra)
    while sim.now() < end - 5 * DAY:
        sim.advance(5 * DAY)
        month += 1
        for customer, sub, kind in subs:
            state = sim.get_subscription(sub)["status"]
            if kind == 4 and state == "past_due":
                sim.pay_open_invoice(sub)
            elif kind == 7 and month == 6 and state == "active":
                sim.cancel_subscription(sub)
            elif kind == 8 and month == 3 and state == "active":
                sim.pause_subscription(sub)
            elif kind == 8 and month == 9 and state == "paused":
                sim.resume_subscription(sub)
            elif kind == 9 and month == 8:
                sim.configure(dunning_end="unpaid")
                sim.fail_next_payments(customer, until_new_card=True)
        # Late in the quarter, so that a thin event's snapshot is still within Stripe's 30 days when fetched.
        money.step(end - sim.now())
    sim.advance_to(end)


class MoneyBack:
    """Refunds and disputes of paid invoices: opened 24 days before the end, settled or closed 12 days before."""

    def __init__(self, sim, subs, account: str, extra: list[str]) -> None:
        self.sim = sim
        self.subs = subs
        self.account = account
        self.extra = extra
        self.pending: list[tuple[str, bool]] = []
        self.disputes: list[tuple[str, bool, str | None]] = []
        self.stage = 0

    def paid_invoice(self, sub: str, account: str | None = None) -> str | None:
        invoice = self.sim.get_subscription(sub, account=account)["latest_invoice"]
        shown = self.sim.get_invoice(invoice, account=account)
        return invoice if shown["status"] == "paid" and shown["amount_paid"] > 0 else None

    def step(self, left: int) -> None:
        if self.stage == 0 and left < 24 * DAY:
            self.stage = 1
            self.open()
        elif self.stage == 1 and left < 12 * DAY:
            self.stage = 2
            for refund, succeeded in self.pending:
                self.sim.settle_refund(refund, succeeded=succeeded)
            for dispute, won, account in self.disputes:
                self.sim.close_dispute(dispute, won=won, account=account)

    def open(self) -> None:
        sim = self.sim
        for n, (_, sub, kind) in enumerate(self.subs):
            invoice = self.paid_invoice(sub)
            if invoice is None:
                continue
            if kind == 0 and n % 20 == 0:
                sim.refund(invoice)
            elif kind == 0:
                sim.refund(invoice, amount=500)
                sim.refund(invoice, amount=700, reason="requested_by_customer")
            elif kind == 6:
                self.pending.append((sim.refund(invoice, pending=True)["id"], n % 20 != 6))
            elif kind == 2:
                dispute = sim.dispute(invoice, inquiry=n % 30 == 2)
                self.disputes.append((dispute["id"], n % 20 == 2, None))
        for i in (1, 5):  # the connected account's
            invoice = self.paid_invoice(self.extra[i], account=self.account)
            if invoice is not None and i == 1:
                sim.refund(invoice, amount=999, account=self.account)
            elif invoice is not None:
                dispute = sim.dispute(invoice, account=self.account)
                self.disputes.append((dispute["id"], False, self.account))


def test_a_quarter_with_chaos_ends_in_stripes_state_with_an_exact_ledger(conn, broker):
    with (
        receiver() as url,
        running_simulator(
            start=int(time.time()) - 95 * DAY,
            webhook_urls=[url],
            webhook_secret=SECRET,
            delivery=CHAOS,
        ) as (sim, sim_url),
        worker(app.build(dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=sim_url))),
    ):
        quarter(sim, random.Random(3))
        drain(conn, sim)
        stats = sim.delivery_stats()
        assert stats["duplicated"] > 0
        assert stats["resent"] > 0
        assert mismatches_after_the_minute_job(conn, sim, sim_url) == []
        assert ledger_mismatches(conn, sim) == []
        money = conn.execute("SELECT status, count(*) AS n FROM payments GROUP BY status").fetchall()
        assert {"REFUNDED", "DISPUTED", "DISPUTE_WON", "DISPUTE_LOST"} <= {r["status"] for r in money}
        events = conn.execute("SELECT status, count(*) AS n FROM stripe_events GROUP BY status").fetchall()
        assert {e["status"] for e in events} <= {"processed", "ignored"}
        deliveries = stats["delivered"]
        print(f"{deliveries} deliveries, {sum(e['n'] for e in events)} events stored")


def test_a_quarter_delivered_only_as_thin_events_ends_in_stripes_state(conn, broker):
    """The same lifecycles, with the same chaos, delivered as thin events only: each applied by
    fetching its object (the worker's Stripe client on the simulator)."""
    with (
        receiver() as url,
        running_simulator(
            start=int(time.time()) - 95 * DAY,
            thin_webhook_urls=[url],
            webhook_secret=SECRET,
            delivery=CHAOS,
        ) as (sim, sim_url),
        worker(app.build(dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=sim_url))),
    ):
        # Fewer customers: every event costs a fetch from the simulator.
        quarter(sim, random.Random(3), customers=40)
        drain(conn, sim)
        assert sim.delivery_stats()["duplicated"] > 0
        assert mismatches_after_the_minute_job(conn, sim, sim_url) == []
        assert invoice_mismatches(conn, sim) == []
        # Each fetched invoice records every fact its state implies, under
        # the events' keys: the ledger is the snapshot delivery's.
        assert ledger_mismatches(conn, sim) == []
        money = {r["status"] for r in conn.execute("SELECT DISTINCT status FROM payments")}
        assert {"REFUNDED", "DISPUTED", "DISPUTE_WON", "DISPUTE_LOST"} <= money
        statuses = {r["status"] for r in conn.execute("SELECT DISTINCT status FROM stripe_events")}
        assert statuses <= {"processed", "ignored"}
