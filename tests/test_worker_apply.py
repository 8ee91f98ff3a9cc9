"""The worker's apply protocol: exactly once, failures recorded, both API shapes.

Tests call the actor's function directly (as polar's tests do) and, where
delivery itself matters, run a real Dramatiq worker on the real Redis broker.
"""

from __future__ import annotations

import copy
import json
import threading
import time

import psycopg
import pytest
from helpers import GRACE, apply, count, event_row, make_event, post_event, queued_ids, subscription_obj, wait_for
from stripe_fixtures import needs_fixtures, read

from subsync import db
from subsync.envelope import read_event
from subsync.store import events
from worker.apply import apply_events


def test_a_subscription_event_becomes_a_row_with_access_and_an_audit_entry(client, conn):
    event = make_event("customer.subscription.created", subscription_obj())
    post_event(client, event)
    assert apply(event["id"]) == "processed"
    sub = conn.execute("SELECT * FROM subscriptions WHERE id = 'sub_1'").fetchone()
    assert (sub["status"], sub["access"], sub["customer_id"], sub["price_id"]) == (
        "active",
        "full",
        "cus_1",
        "price_premium",
    )
    assert sub["current_period_end"].timestamp() == event["data"]["object"]["items"]["data"][0]["current_period_end"]
    row = event_row(conn, event["id"])
    assert (row["status"], row["attempts"], row["last_error"]) == ("processed", 1, None)
    assert row["processed_at"] is not None
    change = conn.execute("SELECT * FROM subscription_changes").fetchone()
    assert (change["source"], change["source_id"], change["before"]) == ("webhook", event["id"], None)


def test_applying_the_same_event_again_changes_nothing(client, conn):
    event = make_event("customer.subscription.created", subscription_obj())
    post_event(client, event)
    apply(event["id"])
    assert apply(event["id"]) == "skipped"
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 1
    assert event_row(conn, event["id"])["attempts"] == 1


def test_a_type_we_do_not_handle_is_stored_ignored_as_it_arrives_and_never_queued(client, conn, broker):
    event = make_event("charge.dispute.updated", {"id": "du_1", "object": "dispute"})
    assert post_event(client, event).get_json() == {"received": True, "duplicate": False}
    stored = event_row(conn, event["id"])
    assert (stored["status"], stored["attempts"], stored["last_error"]) == ("ignored", 0, None)
    assert post_event(client, event).get_json() == {"received": True, "duplicate": True}
    handled = make_event("customer.subscription.created", subscription_obj("sub_queued"))
    post_event(client, handled)
    wait_for(lambda: queued_ids(broker) == [handled["id"]])


def test_the_worker_ignores_a_stored_event_of_a_type_it_does_not_handle(conn):
    # As an earlier version stored it: received, queued.
    event = make_event("charge.dispute.updated", {"id": "du_1", "object": "dispute"})
    with db.pool().connection() as c:
        events.insert(c, read_event(json.dumps(event), tolerance_s=300)[1], json.dumps(event))
    assert event_row(conn, event["id"])["status"] == "received"
    assert apply(event["id"]) == "ignored"
    assert event_row(conn, event["id"])["status"] == "ignored"


def test_an_older_snapshot_never_overwrites_a_newer_one(client, conn):
    now = int(time.time())
    newer = make_event("customer.subscription.updated", subscription_obj(status="past_due"), created=now)
    older = make_event("customer.subscription.updated", subscription_obj(status="active"), created=now - 60)
    for event in (newer, older):
        post_event(client, event)
        apply(event["id"])
    assert conn.execute("SELECT status, access FROM subscriptions").fetchone() == {
        "status": "past_due",
        "access": "restricted",
    }
    assert event_row(conn, older["id"])["status"] == "processed"


@needs_fixtures
def test_the_old_api_shape_with_the_period_on_the_subscription(client, conn):
    event = read("stripe-ruby-mock/customer.subscription.created.json")
    post_event(client, event)
    assert apply(event["id"]) == "processed"
    obj = event["data"]["object"]
    sub = conn.execute("SELECT * FROM subscriptions WHERE id = %s", (obj["id"],)).fetchone()
    assert sub["current_period_end"].timestamp() == obj["current_period_end"]
    assert sub["status"] == obj["status"]


@needs_fixtures
def test_the_basil_shape_with_the_period_on_the_items(client, conn):
    obj = read("pay-rails-pay/subscription.updated.json")["object"]
    # A yearly add-on listed first: the subscription renews when its monthly item does.
    yearly = copy.deepcopy(obj["items"]["data"][0])
    yearly.update(id="si_yearly", current_period_end=yearly["current_period_end"] + 335 * 86400)
    obj["items"]["data"].insert(0, yearly)
    event = make_event("customer.subscription.updated", obj)
    post_event(client, event)
    assert apply(event["id"]) == "processed"
    sub = conn.execute("SELECT * FROM subscriptions WHERE id = %s", (obj["id"],)).fetchone()
    assert sub["current_period_end"].timestamp() == min(i["current_period_end"] for i in obj["items"]["data"])
    assert sub["status"] == obj["status"]


def test_a_snapshot_without_items_over_a_stored_subscription_fails_and_changes_nothing(client, conn):
    now = int(time.time())
    good = make_event("customer.subscription.created", subscription_obj(), created=now - 60)
    post_event(client, good)
    assert apply(good["id"]) == "processed"
    columns = "status, access, price_id, current_period_end, current_period_start"
    before = conn.execute(f"SELECT {columns} FROM subscriptions WHERE id = 'sub_1'").fetchone()

    without_items = subscription_obj(status="past_due")
    del without_items["items"]
    malformed = make_event("customer.subscription.updated", without_items, created=now)
    post_event(client, malformed)
    assert apply(malformed["id"]) == "failed"
    assert conn.execute(f"SELECT {columns} FROM subscriptions WHERE id = 'sub_1'").fetchone() == before
    assert before["access"] == "full"
    row = event_row(conn, malformed["id"])
    assert row["status"] == "failed"
    assert "items" in row["last_error"]
    assert "\n" not in row["last_error"]
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 1


def test_a_failing_handler_rolls_back_and_records_the_error(client, conn, broken_subscriptions_table):
    event = make_event("customer.subscription.created", subscription_obj())
    post_event(client, event)
    assert apply(event["id"]) == "failed"
    row = event_row(conn, event["id"])
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "plan_tier" in row["last_error"]
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 0

    broken_subscriptions_table()
    assert apply(event["id"]) == "processed"  # its retry
    row = event_row(conn, event["id"])
    assert (row["status"], row["attempts"], row["last_error"]) == ("processed", 2, None)
    assert count(conn, "SELECT count(*) AS n FROM subscriptions") == 1


@pytest.fixture
def running_worker(broker):
    """A real Dramatiq worker consuming the real Redis queue, in this process."""
    import dramatiq

    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


def test_the_same_event_posted_from_20_threads_is_stored_once_and_applied_once(app, conn, running_worker):
    event = make_event("customer.subscription.created", subscription_obj())
    answers = []
    barrier = threading.Barrier(20)

    def deliver() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(post_event(client, copy.deepcopy(event)).get_json())

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * 19
    wait_for(lambda: event_row(conn, event["id"])["status"] == "processed")
    assert count(conn, "SELECT count(*) AS n FROM stripe_events") == 1
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 1


# --- One message, a batch of events: each applied once, each failure its own ---


def apply_batch(event_ids):
    return {r.id: r for r in apply_events(db.pool(), event_ids, grace=GRACE)}


def customer_event(i, created=None):
    obj = {"id": f"cus_{i}", "object": "customer", "email": f"{i}@example.com", "name": f"n{i}"}
    return make_event("customer.created", obj, created=created)


def malformed_subscription_event():
    return make_event("customer.subscription.updated", {"id": "sub_bad", "object": "subscription"})


def test_a_batch_is_applied_once_each_in_the_order_received(client, conn):
    now = int(time.time())
    batch = [customer_event(i) for i in range(4)]
    # Two snapshots of one customer: the order received decides the same-second tie.
    batch.append(make_event("customer.updated", {"id": "cus_0", "object": "customer", "name": "later"}, created=now))
    for event in batch:
        post_event(client, event)
    results = apply_batch([event["id"] for event in reversed(batch)])
    assert {r.status for r in results.values()} == {"processed"}
    for event in batch:
        row = event_row(conn, event["id"])
        assert (row["status"], row["attempts"], row["last_error"]) == ("processed", 1, None)
    assert conn.execute("SELECT name FROM customers WHERE id = 'cus_0'").fetchone()["name"] == "later"
    # A second message for them (a duplicate send, a sweep) finds nothing to do.
    assert apply_batch([event["id"] for event in batch]) == {}
    assert {event_row(conn, event["id"])["attempts"] for event in batch} == {1}


def test_a_failing_member_fails_alone_and_the_others_commit(client, conn):
    good, bad, other = customer_event(1), malformed_subscription_event(), customer_event(2)
    for event in (good, bad, other):
        post_event(client, event)
    results = apply_batch([good["id"], bad["id"], other["id"]])
    assert (results[good["id"]].status, results[other["id"]].status) == ("processed", "processed")
    assert count(conn, "SELECT count(*) AS n FROM customers") == 2
    row = event_row(conn, bad["id"])
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"].startswith("MalformedObject: ")
    assert "\n" not in row["last_error"]
    # A payload that can never be parsed gets no retry.
    assert results[bad["id"]].retry_in_ms is None
    assert row["retry_at"] is None


def test_events_of_one_kind_applied_together_keep_their_order_and_their_audit_rows(client, conn):
    now = int(time.time())
    batch = [
        make_event("customer.subscription.created", subscription_obj("sub_a"), created=now - 10),
        make_event("customer.subscription.created", subscription_obj("sub_b"), created=now - 10),
        make_event("customer.subscription.updated", subscription_obj("sub_a", status="past_due"), created=now - 5),
        make_event("customer.subscription.updated", subscription_obj("sub_b", cancel_at_period_end=True), created=now),
        make_event("customer.subscription.updated", subscription_obj("sub_a", status="active"), created=now),
    ]
    for event in batch:
        post_event(client, event)
    results = apply_batch([event["id"] for event in batch])
    assert {r.status for r in results.values()} == {"processed"}
    rows = conn.execute("SELECT id, status, cancel_at_period_end FROM subscriptions ORDER BY id").fetchall()
    assert [(r["id"], r["status"], r["cancel_at_period_end"]) for r in rows] == [
        ("sub_a", "active", False),
        ("sub_b", "active", True),
    ]
    # One audit row per event that changed something, named by it, in the order received.
    changes = conn.execute("SELECT subscription_id, source_id, after FROM subscription_changes ORDER BY id").fetchall()
    assert [(c["subscription_id"], c["source_id"]) for c in changes] == [
        ("sub_a", batch[0]["id"]),
        ("sub_b", batch[1]["id"]),
        ("sub_a", batch[2]["id"]),
        ("sub_b", batch[3]["id"]),
        ("sub_a", batch[4]["id"]),
    ]
    assert changes[2]["after"]["status"] == "past_due"
    assert changes[4]["after"]["status"] == "active"


def test_a_failing_member_of_events_applied_together_fails_alone(client, conn):
    good = make_event("customer.subscription.created", subscription_obj("sub_a"))
    bad = malformed_subscription_event()
    other = make_event("customer.subscription.created", subscription_obj("sub_b"))
    for event in (good, bad, other):
        post_event(client, event)
    results = apply_batch([good["id"], bad["id"], other["id"]])
    assert [results[e["id"]].status for e in (good, bad, other)] == ["processed", "failed", "processed"]
    assert count(conn, "SELECT count(*) AS n FROM subscriptions") == 2
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 2
    assert event_row(conn, bad["id"])["last_error"].startswith("MalformedObject: ")


def test_a_transient_failure_gets_a_retry_of_its_own_with_backoff(client, conn, broken_subscriptions_table):
    sub, cus = make_event("customer.subscription.created", subscription_obj()), customer_event(1)
    for event in (sub, cus):
        post_event(client, event)
    results = apply_batch([sub["id"], cus["id"]])
    assert results[cus["id"]].status == "processed"
    failed = results[sub["id"]]
    assert (failed.status, failed.error_type) == ("failed", "RaiseException")
    assert failed.retry_in_ms >= 10_000
    row = event_row(conn, sub["id"])
    assert row["retry_at"] is not None
    assert "plan_tier" in row["last_error"]
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 0

    broken_subscriptions_table()
    assert apply(sub["id"]) == "processed"  # its retry, alone
    row = event_row(conn, sub["id"])
    assert (row["status"], row["attempts"], row["last_error"], row["retry_at"]) == ("processed", 2, None, None)


def test_an_event_out_of_retries_stays_failed_without_one(client, conn, broken_subscriptions_table):
    event = make_event("customer.subscription.created", subscription_obj())
    post_event(client, event)
    conn.execute("UPDATE stripe_events SET attempts = 10 WHERE id = %s", (event["id"],))
    result = apply_batch([event["id"]])[event["id"]]
    assert (result.status, result.retry_in_ms) == ("failed", None)
    assert event_row(conn, event["id"])["attempts"] == 11


def test_a_replay_of_one_event_inside_an_applied_batch_applies_it_again(client, conn):
    first, second = customer_event(1), customer_event(2)
    post_event(client, first)
    post_event(client, second)
    apply_batch([first["id"], second["id"]])
    with db.pool().connection() as c:
        assert events.reopen(c, [second["id"]]) == [second["id"]]  # `events replay`, then its message
    assert apply_batch([second["id"]])[second["id"]].status == "processed"
    row = event_row(conn, second["id"])
    assert (row["status"], row["attempts"], row["replays"]) == ("processed", 2, 1)
    assert event_row(conn, first["id"])["attempts"] == 1


def test_an_event_another_worker_is_applying_is_waited_for_then_skipped(client, conn, database_url):
    held = customer_event(1)
    post_event(client, held)
    done = []
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM stripe_events WHERE id = %s FOR UPDATE", (held["id"],))
        worker = threading.Thread(target=lambda: done.append(apply_batch([held["id"]])))
        worker.start()
        time.sleep(0.3)
        assert not done  # waiting for the row
        other.execute("UPDATE stripe_events SET status = 'processed' WHERE id = %s", (held["id"],))
        other.commit()
    worker.join(10)
    assert done == [{}]
    assert count(conn, "SELECT count(*) AS n FROM customers") == 0


def test_a_payload_that_cannot_be_parsed_fails_once_and_is_not_retried(client, conn, broker, running_worker):
    event = malformed_subscription_event()
    post_event(client, event)
    wait_for(lambda: event_row(conn, event["id"])["status"] == "failed")
    time.sleep(0.5)  # a retry would be scheduled right after the failure
    row = event_row(conn, event["id"])
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "status" in row["last_error"]
    assert broker.client.llen(f"{broker.namespace}:stripe_events.DQ") == 0  # no retry waiting


def test_a_customer_snapshot_never_goes_back_and_a_deletion_is_final(client, conn):
    now = int(time.time())

    def customer(name, **extra):
        return {"id": "cus_9", "object": "customer", "email": "c9@example.com", "name": name, **extra}

    newer = make_event("customer.updated", customer("Newer"), created=now)
    older = make_event("customer.updated", customer("Older"), created=now - 60)
    for event in (newer, older):
        post_event(client, event)
        assert apply(event["id"]) == "processed"
    assert conn.execute("SELECT name, deleted FROM customers").fetchone() == {"name": "Newer", "deleted": False}

    deleted = make_event("customer.deleted", customer("Newer"), created=now + 1)
    later = make_event("customer.updated", customer("After deletion"), created=now + 2)
    for event in (deleted, later):
        post_event(client, event)
        assert apply(event["id"]) == "processed"
    assert conn.execute("SELECT deleted FROM customers").fetchone()["deleted"] is True
