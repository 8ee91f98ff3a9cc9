"""The worker's apply protocol: exactly once, failures recorded, both API shapes.

Tests call the actor's function directly (as polar's tests do) and, where
delivery itself matters, run a real Dramatiq worker on the real Redis broker.
"""

from __future__ import annotations

import copy
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from conftest import load_fixture, make_event, post_event
from psycopg_pool import ConnectionPool, PoolClosed

from subsync import db, events
from worker.apply import BATCH_OTHERS, _AppliedHere, apply_event

GRACE = timedelta(hours=72)


def subscription_obj(sub_id="sub_1", status="active", period_end=None, **extra):
    now = int(time.time())
    obj = {
        "id": sub_id,
        "object": "subscription",
        "customer": "cus_1",
        "status": status,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        "currency": "usd",
        "metadata": {},
        "latest_invoice": "in_1",
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_1",
                    "object": "subscription_item",
                    "current_period_start": now - 86400,
                    "current_period_end": period_end or now + 29 * 86400,
                    "price": {"id": "price_premium", "object": "price", "currency": "usd", "unit_amount": 2999},
                }
            ],
        },
    }
    obj.update(extra)
    return obj


def apply(event_id):
    return apply_event(db.pool(), event_id, grace=GRACE)


def event_row(conn, event_id):
    return conn.execute("SELECT * FROM stripe_events WHERE id = %s", (event_id,)).fetchone()


def count(conn, sql, *args):
    return conn.execute(sql, args).fetchone()["n"]


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


def test_a_type_we_do_not_handle_is_stored_and_ignored(client, conn):
    event = make_event("charge.refund.updated", {"id": "re_1", "object": "refund"})
    post_event(client, event)
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


def test_the_old_api_shape_with_the_period_on_the_subscription(client, conn):
    event = load_fixture("stripe-ruby-mock/customer.subscription.created.json")
    post_event(client, event)
    assert apply(event["id"]) == "processed"
    obj = event["data"]["object"]
    sub = conn.execute("SELECT * FROM subscriptions WHERE id = %s", (obj["id"],)).fetchone()
    assert sub["current_period_end"].timestamp() == obj["current_period_end"]
    assert sub["status"] == obj["status"]


def test_the_basil_shape_with_the_period_on_the_items(client, conn):
    data = load_fixture("pay-rails-pay/subscription.updated.json")
    event = make_event("customer.subscription.updated", data["object"])
    post_event(client, event)
    assert apply(event["id"]) == "processed"
    obj = data["object"]
    sub = conn.execute("SELECT * FROM subscriptions WHERE id = %s", (obj["id"],)).fetchone()
    assert sub["current_period_end"].timestamp() == max(i["current_period_end"] for i in obj["items"]["data"])
    assert sub["status"] == obj["status"]


def test_a_failing_handler_rolls_back_and_records_the_error(client, conn, broken_subscriptions_table):
    event = make_event("customer.subscription.created", subscription_obj())
    post_event(client, event)
    with pytest.raises(Exception, match="plan_tier"):
        apply(event["id"])
    row = event_row(conn, event["id"])
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "plan_tier" in row["last_error"]
    assert count(conn, "SELECT count(*) AS n FROM subscription_changes") == 0

    broken_subscriptions_table()
    assert apply(event["id"]) == "processed"  # Dramatiq's retry
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


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


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


# --- The actor applies waiting events alongside the message's own (worker.apply.BATCH_OTHERS) ---


def apply_with_others(event_id):
    return apply_event(db.pool(), event_id, grace=GRACE, others=BATCH_OTHERS)


def customer_event(i):
    return make_event("customer.created", {"id": f"cus_{i}", "object": "customer", "email": f"{i}@example.com"})


def malformed_subscription_event():
    return make_event("customer.subscription.updated", {"id": "sub_bad", "object": "subscription"})


def test_waiting_events_are_applied_with_the_claimed_one_and_each_only_once(client, conn):
    events = [customer_event(i) for i in range(4)]
    for event in events:
        post_event(client, event)
    assert apply_with_others(events[2]["id"]) == "processed"
    for event in events:
        row = event_row(conn, event["id"])
        assert (row["status"], row["attempts"], row["last_error"]) == ("processed", 1, None)
    assert count(conn, "SELECT count(*) AS n FROM customers") == 4
    # Their own messages come later and find nothing to do.
    assert [apply_with_others(event["id"]) for event in events] == ["skipped"] * 4
    assert {event_row(conn, event["id"])["attempts"] for event in events} == {1}


def test_a_failing_event_picked_alongside_is_left_to_its_own_message(client, conn):
    bad, good = malformed_subscription_event(), customer_event(1)
    post_event(client, bad)
    post_event(client, good)
    assert apply_with_others(good["id"]) == "processed"
    assert event_row(conn, good["id"])["status"] == "processed"
    row = event_row(conn, bad["id"])
    assert (row["status"], row["attempts"], row["last_error"]) == ("received", 0, None)

    with pytest.raises(Exception, match="status"):
        apply_with_others(bad["id"])  # its own message: failed, counted, the error kept
    row = event_row(conn, bad["id"])
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "status" in row["last_error"]


def test_the_claimed_event_failing_rolls_back_the_others(client, conn):
    bad, good = malformed_subscription_event(), customer_event(1)
    post_event(client, good)
    post_event(client, bad)
    with pytest.raises(Exception, match="status"):
        apply_with_others(bad["id"])
    assert event_row(conn, bad["id"])["status"] == "failed"
    row = event_row(conn, good["id"])
    assert (row["status"], row["attempts"]) == ("received", 0)
    assert count(conn, "SELECT count(*) AS n FROM customers") == 0


def test_an_event_another_worker_holds_is_not_picked(client, conn, database_url):
    first, held = customer_event(1), customer_event(2)
    post_event(client, first)
    post_event(client, held)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM stripe_events WHERE id = %s FOR UPDATE", (held["id"],))
        assert apply_with_others(first["id"]) == "processed"
        other.rollback()
    assert event_row(conn, held["id"])["status"] == "received"
    assert apply_with_others(held["id"]) == "processed"


# --- A message for an event this process applied since it was sent skips without the database ---


def never_opened_pool(database_url):
    """A pool that fails any use: apply_event given it proves it made no round trip."""
    return ConnectionPool(database_url, open=False)


def test_a_message_sent_before_its_event_was_applied_here_skips_without_a_round_trip(client, conn, database_url):
    first, second = customer_event(1), customer_event(2)
    post_event(client, first)
    post_event(client, second)
    queued_at = int(time.time() * 1000) - 10_000  # both messages were queued before the worker got to them
    assert apply_event(db.pool(), first["id"], grace=GRACE, others=BATCH_OTHERS, sent_at_ms=queued_at) == "processed"
    assert event_row(conn, second["id"])["status"] == "processed"

    unusable = never_opened_pool(database_url)
    assert apply_event(unusable, second["id"], grace=GRACE, sent_at_ms=queued_at) == "skipped"
    # Once: a second message for it (a duplicate send) goes through the claim, which finds it done.
    with pytest.raises(PoolClosed):
        apply_event(unusable, second["id"], grace=GRACE, sent_at_ms=queued_at)
    assert apply_event(db.pool(), second["id"], grace=GRACE, sent_at_ms=queued_at) == "skipped"


def test_a_replay_queued_after_the_apply_is_applied_again(client, conn):
    first, second = customer_event(1), customer_event(2)
    post_event(client, first)
    post_event(client, second)
    queued_at = int(time.time() * 1000) - 10_000
    assert apply_event(db.pool(), first["id"], grace=GRACE, others=BATCH_OTHERS, sent_at_ms=queued_at) == "processed"

    with db.pool().connection() as c:
        assert events.reopen(c, [second["id"]]) == [second["id"]]  # `events replay`, then its message
    replayed_at = int(time.time() * 1000)
    assert apply_event(db.pool(), second["id"], grace=GRACE, sent_at_ms=replayed_at) == "processed"
    row = event_row(conn, second["id"])
    assert (row["status"], row["attempts"], row["replays"]) == ("processed", 2, 1)


def test_a_message_sent_within_the_clock_margin_of_the_apply_goes_through_the_claim(client, conn, database_url):
    first, second = customer_event(1), customer_event(2)
    post_event(client, first)
    post_event(client, second)
    before = int(time.time() * 1000)
    assert apply_event(db.pool(), first["id"], grace=GRACE, others=BATCH_OTHERS, sent_at_ms=before - 10_000) == (
        "processed"
    )
    # Sent by a host whose clock may run behind: it could be a replay's.
    with pytest.raises(PoolClosed):
        apply_event(never_opened_pool(database_url), second["id"], grace=GRACE, sent_at_ms=before - 1_000)


def test_this_process_remembers_a_bounded_number_of_applied_events():
    applied = _AppliedHere(limit=2)
    applied.add(["evt_a", "evt_b", "evt_c"], at_ms=10_000)
    assert not applied.take("evt_a", sent_at_ms=0)  # forgotten: the claim decides
    assert applied.take("evt_b", sent_at_ms=0)
    assert applied.take("evt_c", sent_at_ms=0)
