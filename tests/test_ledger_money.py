"""Refunds and disputes in the ledger: one row per refund, per dispute opened and per outcome, whatever the delivery.

Through the receiver (real HTTP, signed deliveries from the simulator), a
Dramatiq worker whose Stripe client is the simulator, and real PostgreSQL;
before 2024-10-28.acacia (a refund is told of by `charge.refunded` and
`charge.refund.updated` only, a charge names its invoice) and at the
current version (`refund.*` events; a charge reaches its invoice through
its payment intent's InvoicePayment).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from helpers import GRACE, SECRET, apply, event_row, post_event
from pipeline import drain, ledger_mismatches, receiver, worker
from sim import DAY, SIM_KEY, api_for, running_simulator

from stripesim import BASIL, LEGACY
from subsync import config, db
from subsync.stripe_api import StripeApi
from worker import app
from worker.apply import apply_events

MONEY = ("REFUNDED", "DISPUTED", "DISPUTE_WON", "DISPUTE_LOST")
VERSIONS = pytest.mark.parametrize("version", [LEGACY, BASIL])
CHAOS = {"duplicate_rate": 0.4, "resend_rate": 0.2, "reorder_window": 20, "reorder_hold": 0.3, "concurrency": 4}


@contextmanager
def pipeline(conn: Any, broker: Any, version: str, **delivery: Any) -> Iterator[tuple[Any, StripeApi]]:
    """Receiver, the simulator at `version` delivering to it, a worker whose Stripe client is the simulator."""
    with (
        receiver() as url,
        running_simulator(webhook_urls=[url], webhook_secret=SECRET, api_version=version, delivery=delivery) as (
            sim,
            sim_url,
        ),
    ):
        settings = dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=sim_url)
        with worker(app.build(settings)):
            yield sim, api_for(sim_url)


def money_rows(conn: Any) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        "SELECT fact_key, status, amount, currency, customer_id, invoice_id, subscription_id, account,"
        " occurred_at, stripe_event_id, source FROM payments WHERE status = ANY(%s)",
        (list(MONEY),),
    ).fetchall()
    return {r["fact_key"]: r for r in rows}


def subscribed(sim: Any, email: str, account: str | None = None) -> tuple[str, str, str]:
    """A customer paying a monthly subscription: (customer, subscription, its first invoice)."""
    customer = sim.create_customer(email=email, account=account)["id"]
    sub = sim.create_subscription(customer, account=account)
    return customer, sub["id"], sub["latest_invoice"]


def whose(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["customer_id"], row["invoice_id"], row["subscription_id"])


@VERSIONS
def test_refunds_full_and_partial_are_one_row_each(conn, broker, version):
    with pipeline(conn, broker, version) as (sim, _):
        full_customer, full_sub, full_invoice = subscribed(sim, "full@example.com")
        part_customer, part_sub, part_invoice = subscribed(sim, "part@example.com")
        sim.advance(3600)
        full = sim.refund(full_invoice)
        first = sim.refund(part_invoice, amount=500)
        sim.advance(60)
        second = sim.refund(part_invoice, amount=700, reason="requested_by_customer")
        drain(conn, sim)
        rows = money_rows(conn)
        assert set(rows) == {f"refund:{full['id']}", f"refund:{first['id']}", f"refund:{second['id']}"}
        assert [rows[f"refund:{r['id']}"]["amount"] for r in (full, first, second)] == [2999, 500, 700]
        assert {r["status"] for r in rows.values()} == {"REFUNDED"}
        assert {r["currency"] for r in rows.values()} == {"usd"}
        assert whose(rows[f"refund:{full['id']}"]) == (full_customer, full_invoice, full_sub)
        assert whose(rows[f"refund:{second['id']}"]) == (part_customer, part_invoice, part_sub)
        assert rows[f"refund:{second['id']}"]["occurred_at"].timestamp() == second["created"]
        assert ledger_mismatches(conn, sim) == []
        statuses = {r["status"] for r in conn.execute("SELECT DISTINCT status FROM stripe_events")}
        assert statuses <= {"processed", "ignored"}


@VERSIONS
def test_a_pending_refund_is_a_row_once_it_succeeds_and_a_failed_one_never(conn, broker, version):
    with pipeline(conn, broker, version) as (sim, _):
        _, _, settles = subscribed(sim, "settles@example.com")
        _, _, fails = subscribed(sim, "fails@example.com")
        settling = sim.refund(settles, amount=1000, pending=True)
        failing = sim.refund(fails, pending=True)
        drain(conn, sim)
        assert money_rows(conn) == {}  # pending: no money given back yet
        sim.advance(2 * DAY)
        sim.settle_refund(settling["id"], succeeded=True)
        sim.settle_refund(failing["id"], succeeded=False)
        drain(conn, sim)
        rows = money_rows(conn)
        assert list(rows) == [f"refund:{settling['id']}"]
        row = rows[f"refund:{settling['id']}"]
        assert (row["status"], row["amount"], row["occurred_at"].timestamp()) == ("REFUNDED", 1000, settling["created"])
        # The event that said it succeeded names the row: refund.updated, or before acacia charge.refund.updated.
        named = conn.execute("SELECT type FROM stripe_events WHERE id = %s", (row["stripe_event_id"],)).fetchone()
        assert named["type"] == ("refund.updated" if version == BASIL else "charge.refund.updated")
        assert ledger_mismatches(conn, sim) == []


@VERSIONS
def test_disputes_won_and_lost_are_opened_then_closed_and_an_inquiry_is_neither(conn, broker, version):
    with pipeline(conn, broker, version) as (sim, _):
        won_customer, won_sub, won_invoice = subscribed(sim, "won@example.com")
        _, _, lost_invoice = subscribed(sim, "lost@example.com")
        _, _, asked_invoice = subscribed(sim, "asked@example.com")
        won = sim.dispute(won_invoice)
        lost = sim.dispute(lost_invoice, amount=1500, reason="product_not_received")
        inquiry = sim.dispute(asked_invoice, inquiry=True)
        drain(conn, sim)
        assert {k: r["status"] for k, r in money_rows(conn).items()} == {
            f"dispute:{won['id']}:opened": "DISPUTED",
            f"dispute:{lost['id']}:opened": "DISPUTED",
        }
        sim.advance(10 * DAY)
        sim.update_dispute(won["id"], evidence={"uncategorized_text": "delivered"})
        sim.advance(10 * DAY)
        sim.close_dispute(won["id"], won=True)
        sim.close_dispute(lost["id"], won=False)
        sim.close_dispute(inquiry["id"], won=True)  # an inquiry closes `warning_closed`
        drain(conn, sim)
        rows = money_rows(conn)
        assert {k: (r["status"], r["amount"]) for k, r in rows.items()} == {
            f"dispute:{won['id']}:opened": ("DISPUTED", 2999),
            f"dispute:{won['id']}:closed": ("DISPUTE_WON", 2999),
            f"dispute:{lost['id']}:opened": ("DISPUTED", 1500),
            f"dispute:{lost['id']}:closed": ("DISPUTE_LOST", 1500),
        }
        opened, closed = rows[f"dispute:{won['id']}:opened"], rows[f"dispute:{won['id']}:closed"]
        assert whose(opened) == whose(closed) == (won_customer, won_invoice, won_sub)
        assert opened["occurred_at"].timestamp() == won["created"]
        assert closed["occurred_at"].timestamp() == sim.now()
        assert ledger_mismatches(conn, sim) == []


@VERSIONS
def test_duplicated_reordered_deliveries_give_one_row_per_refund_and_dispute(conn, broker, version):
    with pipeline(conn, broker, version, **CHAOS) as (sim, _):
        account = sim.create_account()["id"]
        for i in range(6):
            on = account if i % 3 == 2 else None
            _, _, invoice = subscribed(sim, f"chaos{i}@example.com", account=on)
            if i % 2 == 0:
                sim.refund(invoice, amount=300, account=on)
                sim.refund(invoice, amount=400, pending=True, account=on)
                pending = sim.list_refunds(account=on)["data"][0]
                sim.refund(invoice, account=on)  # the rest
                sim.settle_refund(pending["id"], succeeded=i != 4, account=on)
            else:
                dispute = sim.dispute(invoice, account=on)
                sim.advance(60)
                sim.close_dispute(dispute["id"], won=i == 1, account=on)
            sim.advance(3600)
        drain(conn, sim)
        assert sim.delivery_stats()["duplicated"] > 0
        assert ledger_mismatches(conn, sim) == []
        rows = money_rows(conn)
        assert len([k for k in rows if k.startswith("refund:")]) == 3 * 3 - 1  # one pending refund failed
        assert len([k for k in rows if k.startswith("dispute:")]) == 3 * 2
        assert {r["account"] for r in rows.values()} == {None, account}
        statuses = {r["status"] for r in conn.execute("SELECT DISTINCT status FROM stripe_events")}
        assert statuses <= {"processed", "ignored"}


# --- the nightly reconciliation ------------------------------------------------------

LOST = ["charge.refunded", "charge.refund.updated", "refund.*", "charge.dispute.*"]


def reconcile(api: Any, **kwargs: Any) -> Any:
    from reconciler import reconcile as reconciliation

    return reconciliation.run(db.pool(), api, grace=GRACE, **kwargs)


@VERSIONS
def test_the_reconciliation_adds_the_refunds_and_disputes_whose_events_never_arrived(conn, broker, version):
    with pipeline(conn, broker, version, drop_types=LOST) as (sim, api):
        sim.advance_to(int(time.time()) - 4 * DAY)  # within the window the reconciliation lists
        refunded_customer, refunded_sub, refunded = subscribed(sim, "refunded@example.com")
        _, _, disputed = subscribed(sim, "disputed@example.com")
        refund = sim.refund(refunded, amount=999)
        dispute = sim.dispute(disputed)
        sim.advance(3 * DAY)
        sim.close_dispute(dispute["id"], won=False)
        drain(conn, sim)
        assert money_rows(conn) == {}  # every event of them lost

        dry = reconcile(api, dry_run=True)
        assert (dry.refunds_scanned, dry.ledger_refunds_added) == (1, 1)
        assert (dry.disputes_scanned, dry.ledger_disputes_added) == (1, 2)
        assert money_rows(conn) == {}
        report = reconcile(api)
        assert (report.refunds_scanned, report.ledger_refunds_added) == (1, 1)
        assert (report.disputes_scanned, report.ledger_disputes_added) == (1, 2)
        rows = money_rows(conn)
        assert {k: r["status"] for k, r in rows.items()} == {
            f"refund:{refund['id']}": "REFUNDED",
            f"dispute:{dispute['id']}:opened": "DISPUTED",
            f"dispute:{dispute['id']}:closed": "DISPUTE_LOST",
        }
        assert {(r["source"], r["stripe_event_id"]) for r in rows.values()} == {("reconcile", None)}
        assert whose(rows[f"refund:{refund['id']}"]) == (refunded_customer, refunded, refunded_sub)
        assert ledger_mismatches(conn, sim) == []
        run = conn.execute("SELECT * FROM reconciliation_runs ORDER BY id DESC LIMIT 1").fetchone()
        assert (run["ledger_refunds_added"], run["ledger_disputes_added"]) == (1, 2)

        again = reconcile(api)
        assert (again.refunds_scanned, again.ledger_refunds_added, again.ledger_disputes_added) == (1, 0, 0)
        assert len(money_rows(conn)) == 3


def test_the_reconciliation_adds_nothing_the_events_recorded(conn, broker):
    with pipeline(conn, broker, BASIL) as (sim, api):
        sim.advance_to(int(time.time()) - DAY)
        _, _, invoice = subscribed(sim, "told@example.com")
        sim.refund(invoice, amount=100)
        sim.dispute(invoice)
        drain(conn, sim)
        before = money_rows(conn)
        assert len(before) == 2
        report = reconcile(api)
        assert (report.refunds_scanned, report.disputes_scanned) == (1, 1)
        assert (report.ledger_refunds_added, report.ledger_disputes_added) == (0, 0)
        assert money_rows(conn) == before


# --- without an API key, and a ledger made before refunds ------------------------------


def test_a_refund_event_without_an_api_key_fails_and_is_applied_once_there_is_one(client, conn):
    with running_simulator() as (sim, sim_url):
        customer, sub, invoice = subscribed(sim, "keyless@example.com")
        made = sim.refund(invoice, amount=250)
        [event] = [e for e in sim.all_events() if e["type"] == "refund.created"]
        post_event(client, event)
        assert apply(event["id"]) == "failed"
        row = event_row(conn, event["id"])
        assert "STRIPE_API_KEY" in row["last_error"]
        assert row["retry_at"] is not None
        assert money_rows(conn) == {}
        conn.execute("UPDATE stripe_events SET status = 'received' WHERE id = %s", (event["id"],))
        [result] = apply_events(db.pool(), [event["id"]], grace=GRACE, api=api_for(sim_url))
        assert result.status == "processed"
        [fact] = money_rows(conn).values()
        assert (fact["fact_key"], fact["amount"], fact["stripe_event_id"]) == (f"refund:{made['id']}", 250, event["id"])
        assert whose(fact) == (customer, invoice, sub)  # the invoice is not ours: Stripe's names its subscription


def test_a_ledger_made_before_refunds_takes_their_statuses_after_db_init(conn, database_url):
    conn.execute("ALTER TABLE payments DROP CONSTRAINT payments_status_check")
    conn.execute(
        "ALTER TABLE payments ADD CONSTRAINT payments_status_check"
        " CHECK (status IN ('COMPLETED', 'FAILED', 'EXPIRED', 'CANCELLED'))"
    )
    insert = "INSERT INTO payments (fact_key, amount, status, occurred_at) VALUES ('refund:re_1', 5, 'REFUNDED', now())"
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(insert)
    db.apply_schema(database_url)
    db.apply_schema(database_url)  # again: nothing to replace
    conn.execute(insert)
    definition = conn.execute(
        "SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint WHERE conname = 'payments_status_check'"
    ).fetchone()["d"]
    assert "DISPUTE_LOST" in definition
