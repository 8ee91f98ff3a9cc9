"""The product end to end in one test process: a real HTTP receiver, a real
Dramatiq worker on the real Redis broker, the simulator delivering signed
webhooks to it, and the checks that state converged to Stripe's truth."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import psycopg
from helpers import GRACE
from sim import api_for
from werkzeug.serving import make_server

from reconciler import grace
from subsync import config, db, outbox
from subsync.access import access_for
from subsync.broker import make_broker
from subsync.ledger import ledger_fact
from subsync.queue import EventQueue
from subsync.reversals import PaymentLinks, dispute_closed_fact, dispute_opened_fact, refund_fact
from subsync.stripe_objects import invoice_subscription_id, parse_invoice, ts
from webhooks import create_app


@contextmanager
def receiver() -> Iterator[str]:
    """create_app() served over real HTTP on a free port; yields the webhook URL."""
    server = make_server("127.0.0.1", 0, create_app(config.load()), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def worker(broker: Any, threads: int = 8) -> Iterator[dramatiq.Worker]:
    w = dramatiq.Worker(broker, worker_timeout=50, worker_threads=threads)
    w.start()
    try:
        yield w
    finally:
        w.stop()


def unfinished(conn: psycopg.Connection[Any]) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM stripe_events WHERE status IN ('received', 'processing', 'failed')"
    ).fetchone()["n"]


def drain(conn: psycopg.Connection[Any], sim: Any, timeout: float = 120.0) -> None:
    """Wait until the simulator delivered everything and the worker applied it."""
    deadline = time.monotonic() + timeout
    assert sim.flush(timeout), "the simulator could not deliver everything"
    queue = EventQueue(make_broker(config.load()))
    quiet_since = None
    while time.monotonic() < deadline:
        if unfinished(conn) == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.5:
                return
        else:
            quiet_since = None
            # Anything a fault left behind is what the outbox sweep is for.
            outbox.sweep(db.pool(), queue, older_than=timedelta(seconds=5))
        time.sleep(0.1)
    raise AssertionError(f"{unfinished(conn)} events still unfinished after {timeout} s")


def mismatches_after_the_minute_job(conn: psycopg.Connection[Any], sim: Any, sim_url: str) -> list[str]:
    """The subscriptions that differ from Stripe's once the minute job has run, as the scheduler runs it.

    It asks Stripe for the rows two events of one second left on a guess (a
    renewal and an app's update in one second; subsync.transitions, rule 5);
    none is left marked after it.
    """
    result = grace.refresh(db.pool(), grace=GRACE, api=api_for(sim_url, library_retries=False))
    print(f"minute job: {result}")
    marked = conn.execute("SELECT count(*) AS n FROM subscriptions WHERE confirm_requested_at IS NOT NULL")
    assert marked.fetchone()["n"] == 0  # type: ignore[index]
    return subscription_mismatches(conn, sim)


def when(seconds: int | None) -> datetime | None:
    """A Stripe unix time as the database gives it back."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def stripe_period(sub: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """The period Stripe's object gives: the item whose period ends first when the items carry periods
    (basil on; a monthly base with a yearly add-on renews monthly), else the subscription's own."""
    dated = [i for i in sub["items"]["data"] if i.get("current_period_end") is not None]
    if dated:
        first = min(dated, key=lambda i: (i["current_period_end"], i["id"]))
        return when(first["current_period_start"]), when(first["current_period_end"])
    return when(sub.get("current_period_start")), when(sub.get("current_period_end"))


def stripe_columns(sub: dict[str, Any]) -> dict[str, Any]:
    """Every column of `subscriptions` that Stripe's object determines, read from the object itself."""
    first = sub["items"]["data"][0]
    start, end = stripe_period(sub)
    return {
        "customer_id": sub["customer"],
        "status": sub["status"],
        "current_period_start": start,
        "current_period_end": end,
        "cancel_at_period_end": sub["cancel_at_period_end"],
        "cancel_at": when(sub.get("cancel_at")),
        "canceled_at": when(sub.get("canceled_at")),
        "ended_at": when(sub.get("ended_at")),
        "trial_end": when(sub.get("trial_end")),
        "price_id": first["price"]["id"],
        "currency": sub.get("currency") or first["price"]["currency"],
        "metadata": sub.get("metadata") or {},
        "latest_invoice_id": sub.get("latest_invoice"),
        "cancellation_reason": (sub.get("cancellation_details") or {}).get("reason"),
        "livemode": sub["livemode"],
        "account": sub["account"],
    }


def stripe_items(sub: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Each item of Stripe's object: price, product, quantity, its period (the subscription's before basil), account."""
    return {
        i["id"]: (
            i["price"]["id"],
            i["price"]["product"],
            i["quantity"],
            when(i.get("current_period_start", sub.get("current_period_start"))),
            when(i.get("current_period_end", sub.get("current_period_end"))),
            sub["account"],
        )
        for i in sub["items"]["data"]
    }


def subscription_mismatches(conn: psycopg.Connection[Any], sim: Any) -> list[str]:
    """Every subscription (of every account) whose columns, access or items differ from Stripe's object."""
    rows = {r["id"]: r for r in conn.execute("SELECT * FROM subscriptions")}
    items: dict[str, dict[str, tuple[Any, ...]]] = {}
    for item in conn.execute(
        "SELECT id, subscription_id, price_id, product_id, quantity, current_period_start, current_period_end,"
        " account FROM subscription_items"
    ):
        items.setdefault(item["subscription_id"], {})[item["id"]] = (
            item["price_id"],
            item["product_id"],
            item["quantity"],
            item["current_period_start"],
            item["current_period_end"],
            item["account"],
        )
    now = datetime.now(UTC)
    problems = []
    for sub in sim.truth(["subscriptions"], account="all")["subscriptions"]:
        ours = rows.get(sub["id"])
        if ours is None:
            problems.append(f"{sub['id']}: missing ({sub['status']})")
            continue
        expected = stripe_columns(sub)
        reason = expected["cancellation_reason"]
        expected["access"] = access_for(expected["status"], expected["current_period_end"], reason, now, GRACE).value
        for column, value in expected.items():
            if ours[column] != value:
                problems.append(f"{sub['id']}: {column} is {ours[column]!r}, Stripe says {value!r}")
        want = stripe_items(sub)
        stored = items.get(sub["id"], {})
        if stored != want:
            problems.append(f"{sub['id']}: items {sorted(stored.items())}, Stripe says {sorted(want.items())}")
    return problems


def invoice_mismatches(conn: psycopg.Connection[Any], sim: Any) -> list[str]:
    """Every invoice (of every account) whose state, amounts, subscription, period or account differ from Stripe's."""
    ours = {r["id"]: r for r in conn.execute("SELECT * FROM invoices")}
    problems = []
    for obj in sim.truth(["invoices"], account="all")["invoices"]:
        truth = parse_invoice(obj, account=obj["account"])
        row = ours.get(truth.id)
        if row is None:
            problems.append(f"{truth.id}: missing ({truth.status})")
            continue
        for column in INVOICE_COLUMNS:
            if row[column] != getattr(truth, column):
                problems.append(f"{truth.id}: {column} is {row[column]!r}, Stripe says {getattr(truth, column)!r}")
    return problems


INVOICE_COLUMNS = ("status", "amount_due", "amount_paid", "attempt_count", "subscription_id", "period_end", "account")


def ledger_mismatches(conn: psycopg.Connection[Any], sim: Any) -> list[str]:
    """The ledger against Stripe's facts: one row per fact, right amounts, and for refunds and disputes, whose.

    Payments, failures, expiries, cancellations: the facts in every event
    Stripe emitted. Refunds and disputes: the facts of every refund and
    dispute Stripe holds (a `charge.refunded` does not say which refund it
    is about), each naming the charge's customer, invoice and subscription.
    """
    expected: dict[str, tuple[Any, ...]] = {}
    for event in sim.all_events(account="all"):
        account = event.get("account")
        fact = ledger_fact(event["type"], event["data"]["object"], ts(event["created"]), account=account)
        if fact is not None:
            expected.setdefault(fact.fact_key, (fact.status, fact.amount, account))
    expected.update(reversal_truth(sim))
    rows = conn.execute(
        "SELECT fact_key, status, amount, account, customer_id, invoice_id, subscription_id FROM payments"
    ).fetchall()
    ours: dict[str, tuple[Any, ...]] = {}
    for r in rows:
        whose = (r["customer_id"], r["invoice_id"], r["subscription_id"]) if r["status"] in MONEY_BACK else ()
        ours[r["fact_key"]] = (r["status"], r["amount"], r["account"], *whose)
    problems = [f"{k}: ours {ours.get(k)}, expected {v}" for k, v in expected.items() if ours.get(k) != v]
    problems += [f"{k}: not a fact Stripe emitted" for k in ours.keys() - expected.keys()]
    if len(rows) != len(ours):
        problems.append("duplicate fact rows")
    return problems


MONEY_BACK = frozenset({"REFUNDED", "DISPUTED", "DISPUTE_WON", "DISPUTE_LOST"})


def listed(sim: Any, what: str, account: str | None) -> list[dict[str, Any]]:
    """Every refund or dispute (`what`) of one account, from the simulator's own listing, to the end."""
    out: list[dict[str, Any]] = []
    after = None
    while True:
        page = getattr(sim, f"list_{what}")(limit=100, starting_after=after, account=account)
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["data"][-1]["id"]


def charge_links(sim: Any, charge_id: str, account: str | None) -> PaymentLinks:
    """Whose payment a charge was, as the simulator's objects say."""
    charge = sim.get_charge(charge_id, account=account)
    invoice_id = charge.get("invoice")
    if "invoice" not in charge and charge.get("payment_intent"):
        payments = sim.list_invoice_payments(payment_intent=charge["payment_intent"], account=account)["data"]
        invoice_id = next((p["invoice"] for p in payments if p["status"] == "paid"), None)
    subscription_id = None
    if invoice_id is not None:
        subscription_id = invoice_subscription_id(sim.get_invoice(invoice_id, account=account))
    return PaymentLinks(charge.get("customer"), invoice_id, subscription_id)


def reversal_truth(sim: Any) -> dict[str, tuple[Any, ...]]:
    """The ledger's refund and dispute rows as the simulator's refunds and disputes imply them."""
    expected: dict[str, tuple[Any, ...]] = {}
    now = datetime.now(UTC)
    for account in [None, *sim.settings()["connected_accounts"]]:
        facts = []
        for refund in listed(sim, "refunds", account):
            links = charge_links(sim, refund["charge"], account)
            facts.append(refund_fact(refund, links, account=account))
        for dispute in listed(sim, "disputes", account):
            links = charge_links(sim, dispute["charge"], account)
            facts.append(dispute_opened_fact(dispute, links, account=account))
            facts.append(dispute_closed_fact(dispute, links, now, account=account))
        for fact in facts:
            if fact is not None:
                whose = (fact.customer_id, fact.invoice_id, fact.subscription_id)
                expected[fact.fact_key] = (fact.status, fact.amount, account, *whose)
    return expected
