"""Writes of many rows in one statement: split at PostgreSQL's parameter limit, each row's outcome its own."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from helpers import make_event

from subsync import db
from subsync.envelope import read_event
from subsync.ledger import PaymentFact
from subsync.store import events, invoices, payments
from subsync.stripe_objects import parse_invoice


def test_rows_beyond_the_parameter_limit_go_in_several_statements_and_all_come_back_in_order(conn, monkeypatch):
    # Two rows of 11 parameters to a statement.
    monkeypatch.setattr(db, "MAX_PARAMS", 22)
    sent = [make_event() for _ in range(5)]
    arrivals = [events.Arrival(read_event(json.dumps(e), tolerance_s=300)[1], json.dumps(e)) for e in sent]
    statements = []
    original = db._rows_sql

    def counted(statement, rows):
        statements.append(rows)
        return original(statement, rows)

    monkeypatch.setattr(db, "_rows_sql", counted)
    assert events.insert_many(conn, arrivals) == {e["id"] for e in sent}
    assert statements == [2, 2, 1]
    assert conn.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 5


def invoice(status: str, created: int) -> dict:
    return {
        "id": "in_1",
        "object": "invoice",
        "customer": "cus_1",
        "status": status,
        "amount_due": 2999,
        "amount_paid": 2999 if status == "paid" else 0,
        "currency": "usd",
        "created": created,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1"}},
        "lines": {"object": "list", "data": []},
    }


def test_two_snapshots_of_one_invoice_in_one_call_write_the_later_once(conn):
    now = int(time.time())
    draft = parse_invoice(invoice("open", now))
    paid = parse_invoice(invoice("paid", now))
    earlier = datetime.fromtimestamp(now - 10, UTC)
    later = datetime.fromtimestamp(now, UTC)

    written = invoices.apply_invoice_snapshots(conn, [(draft, earlier), (paid, later), (draft, earlier)])

    assert written[0] is not None
    assert written[1] is not None
    assert written[2] is None  # older than what the call already applied
    rows = conn.execute("SELECT status FROM invoices").fetchall()
    assert [r["status"] for r in rows] == ["paid"]


def test_payments_recorded_together_add_each_fact_once(conn):
    def fact(key: str) -> PaymentFact:
        return PaymentFact(
            fact_key=key,
            customer_id="cus_1",
            subscription_id="sub_1",
            invoice_id="in_1",
            checkout_session_id=None,
            amount=2999,
            currency="usd",
            status="COMPLETED",
            occurred_at=datetime.now(UTC),
            account=None,
        )

    assert payments.record_payments(conn, [(fact("invoice:in_0:paid"), None)]) == {"invoice:in_0:paid"}
    added = payments.record_payments(
        conn, [(fact("invoice:in_0:paid"), None), (fact("invoice:in_1:paid"), None), (fact("invoice:in_1:paid"), None)]
    )
    assert added == {"invoice:in_1:paid"}
    assert conn.execute("SELECT count(*) AS n FROM payments").fetchone()["n"] == 2
