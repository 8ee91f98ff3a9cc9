"""Access through real events: dunning, suspension with an owed amount, time, notifications."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from helpers import apply, make_event, post_event, subscription_obj

from reconciler import grace
from subsync import db

DAY = 86400
GRACE = timedelta(hours=72)


def sub_row(conn, sub_id="sub_1"):
    return conn.execute("SELECT * FROM subscriptions WHERE id = %s", (sub_id,)).fetchone()


def deliver(client, event_type, obj, created):
    event = make_event(event_type, obj, created=created)
    post_event(client, event)
    apply(event["id"])
    return event


def invoice_obj(inv_id, *, status, amount_due=2999, attempt_count=1, period_start, period_end, sub_id="sub_1"):
    return {
        "id": inv_id,
        "object": "invoice",
        "customer": "cus_1",
        "status": status,
        "amount_due": amount_due,
        "amount_paid": amount_due if status == "paid" else 0,
        "currency": "usd",
        "attempt_count": attempt_count,
        "created": period_start,
        "period_start": period_start - 30 * DAY,
        "period_end": period_start,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub_id}},
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": "il_1",
                    "amount": amount_due,
                    "currency": "usd",
                    "period": {"start": period_start, "end": period_end},
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"subscription": sub_id, "subscription_item": "si_1"},
                    },
                }
            ],
        },
        "status_transitions": {"paid_at": None},
    }


def test_dunning_restricts_then_a_new_card_restores_full(client, conn):
    now = int(time.time())
    deliver(client, "customer.subscription.created", subscription_obj(), now - 100)
    assert sub_row(conn)["access"] == "full"
    deliver(client, "customer.subscription.updated", subscription_obj(status="past_due"), now - 50)
    assert sub_row(conn)["access"] == "restricted"
    deliver(client, "customer.subscription.updated", subscription_obj(status="active"), now - 10)
    assert sub_row(conn)["access"] == "full"


def test_dunning_ending_canceled_suspends_with_the_owed_amount(client, conn):
    now = int(time.time())
    start = now - 15 * DAY
    deliver(client, "customer.subscription.created", subscription_obj(), start - 100)
    unpaid = invoice_obj("in_9", status="open", period_start=start, period_end=start + 30 * DAY)
    deliver(client, "invoice.payment_failed", unpaid, start + 3600)
    canceled = subscription_obj(
        status="canceled",
        ended_at=now,
        canceled_at=now,
        cancellation_details={"reason": "payment_failed", "comment": None, "feedback": None},
    )
    deliver(client, "customer.subscription.deleted", canceled, now)
    row = sub_row(conn)
    assert (row["access"], row["owed_amount"]) == ("suspended", 1500)  # 2999 x 15/30, half up


def test_the_owed_amount_is_priced_when_the_invoice_arrives_after_the_cancellation(client, conn):
    now = int(time.time())
    start = now - 15 * DAY
    canceled = subscription_obj(
        status="canceled",
        ended_at=now,
        canceled_at=now,
        cancellation_details={"reason": "payment_failed", "comment": None, "feedback": None},
    )
    deliver(client, "customer.subscription.deleted", canceled, now)
    assert sub_row(conn)["owed_amount"] is None
    unpaid = invoice_obj("in_9", status="open", period_start=start, period_end=start + 30 * DAY)
    deliver(client, "invoice.payment_failed", unpaid, start + 3600)
    assert sub_row(conn)["owed_amount"] == 1500


def test_a_cancellation_by_the_customer_gives_no_access_and_owes_nothing(client, conn):
    now = int(time.time())
    canceled = subscription_obj(
        status="canceled",
        ended_at=now,
        canceled_at=now,
        cancellation_details={"reason": "cancellation_requested", "comment": None, "feedback": None},
    )
    deliver(client, "customer.subscription.deleted", canceled, now)
    assert (sub_row(conn)["access"], sub_row(conn)["owed_amount"]) == ("none", None)


def test_unpaid_suspends(client, conn):
    deliver(client, "customer.subscription.updated", subscription_obj(status="unpaid"), int(time.time()))
    assert sub_row(conn)["access"] == "suspended"


def test_time_moves_full_to_grace_then_restricted_without_stripe(client, conn):
    now = datetime.now(UTC)
    ended = int((now - timedelta(hours=1)).timestamp())
    deliver(client, "customer.subscription.created", subscription_obj(period_end=ended), ended - 30 * DAY)
    assert sub_row(conn)["access"] == "grace"  # computed at apply time already
    conn.execute("UPDATE subscriptions SET access = 'full'")  # as if applied before the period ended

    result = grace.refresh(db.pool(), grace=GRACE, api=None, now=now)
    assert (result.checked, sub_row(conn)["access"]) == (1, "grace")
    assert grace.refresh(db.pool(), grace=GRACE, api=None, now=now + timedelta(hours=1)).checked == 0

    later = now + GRACE
    grace.refresh(db.pool(), grace=GRACE, api=None, now=later)
    assert sub_row(conn)["access"] == "restricted"
    sources = [r["source"] for r in conn.execute("SELECT source FROM subscription_changes ORDER BY id")]
    assert sources == ["webhook", "grace", "grace"]


@pytest.fixture
def listener(database_url):
    with psycopg.connect(database_url, autocommit=True) as listen_conn:
        listen_conn.execute("LISTEN subscription_access")
        yield listen_conn


def received(listen_conn, timeout=2.0):
    return [json.loads(n.payload) for n in listen_conn.notifies(timeout=timeout, stop_after=None)]


def test_every_access_change_is_notified_and_nothing_else_is(client, conn, listener):
    now = int(time.time())
    deliver(client, "customer.subscription.created", subscription_obj(), now - 100)
    deliver(
        client, "customer.subscription.updated", subscription_obj(metadata={"x": "1"}), now - 90
    )  # no access change
    deliver(client, "customer.subscription.updated", subscription_obj(status="past_due"), now - 50)
    notes = received(listener, timeout=1.0)
    assert [(n["from"], n["to"]) for n in notes] == [(None, "full"), ("full", "restricted")]
    assert {n["subscription_id"] for n in notes} == {"sub_1"}
    assert {n["customer_id"] for n in notes} == {"cus_1"}
    assert all(n["at"] for n in notes)


def test_a_rolled_back_change_is_never_notified(client, conn, listener):
    conn.execute(
        """
        CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN RAISE EXCEPTION 'audit table full'; END$$;
        CREATE TRIGGER refuse_audit BEFORE INSERT ON subscription_changes
        FOR EACH ROW EXECUTE FUNCTION refuse_audit();
        """
    )
    try:
        event = make_event("customer.subscription.created", subscription_obj(), created=int(time.time()))
        post_event(client, event)
        assert apply(event["id"]) == "failed"
        assert "audit table full" in conn.execute("SELECT last_error FROM stripe_events").fetchone()["last_error"]
        assert received(listener, timeout=0.5) == []
        assert sub_row(conn) is None
    finally:
        conn.execute("DROP TRIGGER refuse_audit ON subscription_changes; DROP FUNCTION refuse_audit();")
