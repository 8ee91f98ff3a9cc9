"""When grace runs out, or two events of one second leave the row on a guess, Stripe is asked,
through the simulator over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers import post_event, wait_for
from pipeline import worker
from sim import DAY, api_for, running_simulator

from reconciler import grace, reconcile
from subsync import db

GRACE = timedelta(hours=72)


@pytest.fixture
def stripe_sim(conn, broker):
    # The first period ends 5 days from the real now; the tests then pass
    # `now` explicitly to step through the grace period.
    with running_simulator(start=int(datetime.now(UTC).timestamp()) - 25 * DAY) as (sim, url):
        yield sim, api_for(url, library_retries=False)


def lose_the_renewal(conn, sim, api, setup=None, days=40):
    """One subscription whose renewal happened at Stripe but whose webhooks never came.

    `days` of Stripe's time pass after sign-up; the period ends on day 30.
    """
    customer = sim.create_customer(email="late@example.com")["id"]
    sub = sim.create_subscription(customer)["id"]
    reconcile.run(db.pool(), api, grace=GRACE)  # our copy, as of sign-up
    if setup:
        setup(customer, sub)
    sim.advance(days * DAY)  # renewal (and whatever setup arranged) at Stripe only
    row = conn.execute("SELECT current_period_end FROM subscriptions WHERE id = %s", (sub,)).fetchone()
    return sub, row["current_period_end"]


def row(conn, sub):
    return conn.execute("SELECT status, access, current_period_end FROM subscriptions WHERE id = %s", (sub,)).fetchone()


def sources(conn, sub):
    return [
        r["source"]
        for r in conn.execute("SELECT source FROM subscription_changes WHERE subscription_id = %s ORDER BY id", (sub,))
    ]


def test_a_lost_renewal_keeps_grace_then_is_repaired_from_stripe_when_grace_runs_out(stripe_sim, conn):
    sim, api = stripe_sim
    sub, period_end = lose_the_renewal(conn, sim, api)
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
    assert row(conn, sub)["access"] == "grace"
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=50))
    assert row(conn, sub)["access"] == "grace"  # still within the grace period: Stripe not asked yet

    result = grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE)
    assert (result.asked_stripe, result.repaired_from_stripe) == (1, 1)
    repaired = row(conn, sub)
    assert (repaired["status"], repaired["access"]) == ("active", "full")
    assert repaired["current_period_end"] > period_end
    assert sources(conn, sub) == ["reconcile", "grace", "grace"]


def test_grace_running_out_with_stripe_saying_past_due_restricts(stripe_sim, conn):
    sim, api = stripe_sim
    # Day 31: the renewal payment failed on day 30 and the first retry (day 33) is to come.
    fail = lambda cus, _: sim.fail_next_payments(cus, until_new_card=True)  # noqa: E731
    sub, period_end = lose_the_renewal(conn, sim, api, fail, days=31)
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE)
    result = row(conn, sub)
    assert (result["status"], result["access"]) == ("past_due", "restricted")


def test_grace_running_out_with_stripe_saying_canceled_by_dunning_suspends(stripe_sim, conn):
    sim, api = stripe_sim
    # Day 40: every retry failed (days 33, 35, 37) and dunning canceled the subscription.
    fail = lambda cus, _: sim.fail_next_payments(cus, until_new_card=True)  # noqa: E731
    sub, period_end = lose_the_renewal(conn, sim, api, fail, days=40)
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE)
    result = row(conn, sub)
    assert (result["status"], result["access"]) == ("canceled", "suspended")


def test_grace_running_out_with_stripe_saying_canceled_removes_access(stripe_sim, conn):
    sim, api = stripe_sim
    sub, period_end = lose_the_renewal(conn, sim, api, lambda _, s: sim.cancel_subscription(s, at_period_end=True))
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE)
    assert (row(conn, sub)["status"], row(conn, sub)["access"]) == ("canceled", "none")


def test_stripe_unreachable_keeps_grace_and_tries_again(stripe_sim, conn):
    sim, api = stripe_sim
    sub, period_end = lose_the_renewal(conn, sim, api)
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
    sim.set_rate_limit(every=1)
    result = grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE)
    assert result.stripe_errors == 1
    assert row(conn, sub)["access"] == "grace"
    sim.set_rate_limit()
    grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + GRACE + timedelta(minutes=1))
    assert row(conn, sub)["access"] == "full"


@pytest.fixture
def renewed_in_the_past(conn, broker):
    # The renewal 35 days after sign-up is 5 days ago: its events are not from the receiver's future.
    with running_simulator(start=int(datetime.now(UTC).timestamp()) - 35 * DAY) as (sim, url):
        yield sim, api_for(url, library_retries=False)


def test_a_renewal_and_an_update_in_one_second_delivered_backwards_are_confirmed_with_stripe(
    renewed_in_the_past, conn, client, broker
):
    sim, api = renewed_in_the_past
    sub = sim.create_subscription(sim.create_customer(email="tie@example.com")["id"])
    reconcile.run(db.pool(), api, grace=GRACE)  # our copy, as of sign-up
    period_end = sub["items"]["data"][0]["current_period_end"]
    sim.advance_to(period_end)  # the renewal, then in the same second the app's update
    sim.update_subscription_metadata(sub["id"], {"last_seen_day": "68"})
    renewal, update = [e for e in sim.all_events(type="customer.subscription.updated") if e["created"] == period_end]
    assert renewal["data"]["object"]["metadata"] == {}  # the renewal's snapshot is the older content
    assert update["data"]["object"]["items"] == renewal["data"]["object"]["items"]  # equal progress keys

    def processed(event_id):
        found = conn.execute("SELECT status FROM stripe_events WHERE id = %s", (event_id,)).fetchone()
        return found is not None and found["status"] == "processed"

    with worker(broker, threads=1):  # its shutdown closes this process's pool: the checks run within
        for event in (update, renewal):  # the order that leaves the older content
            post_event(client, event)
            wait_for(lambda event=event: processed(event["id"]))
        marked = conn.execute("SELECT metadata, confirm_requested_at FROM subscriptions WHERE id = %s", (sub["id"],))
        marked = marked.fetchone()
        assert marked["metadata"] == {}
        assert marked["confirm_requested_at"] is not None

        grace.refresh(db.pool(), grace=GRACE, api=None)  # without a key: nothing to ask, the mark stays
        assert conn.execute("SELECT confirm_requested_at FROM subscriptions").fetchone()["confirm_requested_at"]

        sim.advance(1)  # the minute job runs a moment later
        result = grace.refresh(db.pool(), grace=GRACE, api=api)
        assert (result.asked_stripe, result.confirmed, result.stripe_errors) == (1, 1, 0)
        confirmed = conn.execute(
            "SELECT metadata, confirm_requested_at FROM subscriptions WHERE id = %s", (sub["id"],)
        ).fetchone()
        assert confirmed == {"metadata": {"last_seen_day": "68"}, "confirm_requested_at": None}
        assert sources(conn, sub["id"])[-1] == "grace"
        assert grace.refresh(db.pool(), grace=GRACE, api=api).asked_stripe == 0  # confirmed once


def test_a_marked_row_stays_marked_while_stripe_cannot_be_asked(stripe_sim, conn):
    sim, api = stripe_sim
    sub = sim.create_subscription(sim.create_customer(email="tie@example.com")["id"])["id"]
    reconcile.run(db.pool(), api, grace=GRACE)
    conn.execute("UPDATE subscriptions SET confirm_requested_at = now() WHERE id = %s", (sub,))
    sim.advance(1)  # an answer of the mark's own second would confirm nothing
    sim.set_rate_limit(every=1)
    result = grace.refresh(db.pool(), grace=GRACE, api=api)
    assert (result.asked_stripe, result.confirmed, result.stripe_errors) == (1, 0, 1)
    assert conn.execute("SELECT confirm_requested_at FROM subscriptions").fetchone()["confirm_requested_at"]
    sim.set_rate_limit()
    assert grace.refresh(db.pool(), grace=GRACE, api=api).confirmed == 1


def test_the_reconciliation_clears_a_mark_on_a_row_equal_to_stripes(stripe_sim, conn):
    sim, api = stripe_sim
    sim.create_subscription(sim.create_customer(email="tie@example.com")["id"])
    reconcile.run(db.pool(), api, grace=GRACE)
    conn.execute("UPDATE subscriptions SET confirm_requested_at = now()")
    sim.advance(1)
    reconcile.run(db.pool(), api, grace=GRACE)
    assert conn.execute("SELECT confirm_requested_at FROM subscriptions").fetchone()["confirm_requested_at"] is None
    assert conn.execute("SELECT count(*) AS n FROM subscription_changes").fetchone()["n"] == 1  # the mark: no audit
