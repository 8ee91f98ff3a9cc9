"""When grace runs out, Stripe is asked first, through the simulator over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
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
