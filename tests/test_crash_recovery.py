"""A worker killed -9 in the middle of an event: applied once after restart.

Redis would hand the dead worker's message back only after its heartbeat
timeout and a random maintenance pass; recovery comes from PostgreSQL (the
outbox sweep), and the apply protocol makes the second attempt the only one
that counts.
"""

from __future__ import annotations

import psycopg
import pytest
from helpers import count, event_row, make_event, post_event, queued_messages, subscription_obj, wait_for
from processes import kill9, start_worker, stop

from subsync import db, outbox

pytestmark = pytest.mark.slow


def test_a_worker_killed_mid_event_leaves_nothing_half_done_and_the_event_is_applied_once(
    client, conn, broker, event_queue, database_url
):
    event = make_event("customer.subscription.created", subscription_obj("sub_kill"))
    # Hold the subscription's lock so the worker blocks inside its transaction.
    with psycopg.connect(database_url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(hashtextextended('subscription:' || 'sub_kill', 0))")
        post_event(client, event)
        worker = start_worker()
        try:
            wait_for(
                lambda: (
                    count(
                        conn,
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE %s",
                        "%pg_advisory_xact_lock%",
                    )
                    == 1
                )
            )
            assert event_row(conn, event["id"])["status"] == "processing"
            kill9(worker)
        finally:
            stop(worker)
        blocker.execute("SELECT pg_advisory_unlock_all()")

    row = event_row(conn, event["id"])
    assert (row["status"], row["attempts"]) == ("processing", 1)
    assert count(conn, "SELECT count(*) AS n FROM subscriptions") == 0

    worker = start_worker()
    try:
        conn.execute("UPDATE stripe_events SET received_at = now() - interval '1 minute'")
        assert outbox.sweep(db.pool(), event_queue) == 1
        wait_for(lambda: event_row(conn, event["id"])["status"] == "processed", timeout=30)
    finally:
        stop(worker)
    assert event_row(conn, event["id"])["attempts"] == 2
    assert count(conn, "SELECT count(*) AS n FROM subscriptions") == 1
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 1


def test_a_batch_whose_worker_is_killed_mid_apply_is_applied_exactly_once_after_the_sweep(
    client, conn, broker, event_queue, database_url
):
    batch = [make_event("customer.subscription.created", subscription_obj(f"sub_b{i}")) for i in range(5)]
    for event in batch:
        post_event(client, event)
    ids = [event["id"] for event in batch]
    broker.client.delete(*broker.client.keys(f"{broker.namespace}:*"))  # one message carries them all instead
    assert event_queue.send(ids) == 5
    assert len(queued_messages(broker)) == 1
    with psycopg.connect(database_url, autocommit=True) as blocker:
        # The last one's lock: the worker waits holding every other one, inside its transaction.
        blocker.execute("SELECT pg_advisory_lock(hashtextextended('subscription:' || 'sub_b4', 0))")
        worker = start_worker()
        try:
            wait_for(
                lambda: (
                    count(
                        conn,
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE %s",
                        "%pg_advisory_xact_lock%",
                    )
                    == 1
                )
            )
            assert {event_row(conn, i)["status"] for i in ids} == {"processing"}
            kill9(worker)
        finally:
            stop(worker)
        blocker.execute("SELECT pg_advisory_unlock_all()")
    assert count(conn, "SELECT count(*) AS n FROM subscriptions") == 0

    worker = start_worker()
    try:
        conn.execute("UPDATE stripe_events SET received_at = now() - interval '1 minute'")
        assert outbox.sweep(db.pool(), event_queue) == 5
        wait_for(lambda: {event_row(conn, i)["status"] for i in ids} == {"processed"}, timeout=30)
    finally:
        stop(worker)
    assert {event_row(conn, i)["attempts"] for i in ids} == {2}
    assert count(conn, "SELECT count(*) AS n FROM subscriptions") == 5
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 5
