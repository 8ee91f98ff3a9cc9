"""A connected account Stripe refuses us (revoked, unknown to our key) stops only that account.

The reconciliation and the backfill go on with the other accounts and say
which failed; the grace check gives that account's rows one more grace
period, then restricts them, instead of deferring them every minute forever.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers import GRACE, apply, make_event, post_event
from sim import DAY, api_for, running_simulator

from reconciler import backfill, grace, reconcile
from subsync import db


@pytest.fixture
def stripe_sim(conn, broker):
    # The first monthly period ends 5 days from the real now.
    with running_simulator(start=int(datetime.now(UTC).timestamp()) - 25 * DAY) as (sim, url):
        yield sim, api_for(url, library_retries=False)


def subscribe_on(sim, client, account: str, email: str) -> str:
    """A subscription of a connected account whose sign-up reached us as that account's webhook."""
    customer = sim.create_customer(email=email, account=account)["id"]
    sub = sim.create_subscription(customer, account=account)
    event = make_event("customer.subscription.updated", sub, created=sim.now())
    event["account"] = account
    post_event(client, event)
    assert apply(event["id"]) == "processed"
    return sub["id"]


def two_accounts(sim, client) -> tuple[str, str, str]:
    """A revoked account first in order, one still connected after it, and the latter's subscription."""
    revoked, connected = sorted(sim.create_account()["id"] for _ in range(2))
    subscribe_on(sim, client, revoked, "r@example.com")
    sub = subscribe_on(sim, client, connected, "c@example.com")
    sim.deauthorize_account(revoked)
    return revoked, connected, sub


def test_a_revoked_account_fails_alone_and_the_run_goes_on(stripe_sim, conn, client):
    sim, api = stripe_sim
    revoked, connected, sub = two_accounts(sim, client)
    sim.update_subscription_metadata(sub, {"plan": "team"}, account=connected)  # its webhook lost
    report = reconcile.run(db.pool(), api, grace=GRACE)
    assert report.status == "succeeded"
    assert report.error == f"partial: Stripe refused 1 connected account(s), not reconciled: {revoked}"
    assert report.accounts_failed == 1
    assert report.accounts[revoked].accounts_failed == 1
    assert "PermissionError" in report.account_errors[revoked]
    assert (report.accounts[connected].scanned, report.accounts[connected].fixed) == (1, 1)
    assert conn.execute("SELECT metadata FROM subscriptions WHERE id = %s", (sub,)).fetchone()["metadata"] == {
        "plan": "team"
    }
    stored = conn.execute("SELECT * FROM reconciliation_runs").fetchone()
    assert (stored["status"], stored["accounts_failed"], stored["error"]) == ("succeeded", 1, report.error)
    assert "PermissionError" in stored["accounts"][revoked]["error"]
    assert stored["accounts"][connected]["error"] is None
    assert stored["accounts"]["platform"]["error"] is None


def test_a_revoked_account_is_skipped_by_the_backfill_and_the_others_are_backfilled(
    stripe_sim, conn, client, event_queue
):
    sim, api = stripe_sim
    revoked, connected, _ = two_accounts(sim, client)
    report = backfill.backfill(db.pool(), api, event_queue)
    assert report.accounts_failed == 1
    assert "PermissionError" in report.accounts[revoked]["error"]
    assert report.accounts[connected]["listed"] == len(sim.all_events(account=connected)) > 0
    assert report.accounts[connected]["recovered"] > 0


def test_a_revoked_accounts_rows_keep_grace_one_more_grace_period_then_are_restricted(stripe_sim, conn, client):
    sim, api = stripe_sim
    account = sim.create_account()["id"]
    subs = [subscribe_on(sim, client, account, f"g{i}@example.com") for i in range(2)]
    period_end = conn.execute("SELECT max(current_period_end) AS t FROM subscriptions").fetchone()["t"]
    sim.deauthorize_account(account)

    def check(at):
        result = grace.refresh(db.pool(), grace=GRACE, api=api, now=at)
        access = {r["access"] for r in conn.execute("SELECT access FROM subscriptions WHERE id = ANY(%s)", (subs,))}
        return result, access

    assert check(period_end + timedelta(hours=1))[1] == {"grace"}
    result, access = check(period_end + GRACE)
    assert (result.asked_stripe, result.stripe_errors, access) == (1, 2, {"grace"})  # asked once for the account
    result, access = check(period_end + 2 * GRACE - timedelta(minutes=1))
    assert (result.asked_stripe, result.stripe_errors, access) == (1, 2, {"grace"})
    result, access = check(period_end + 2 * GRACE)
    assert (result.asked_stripe, result.stripe_errors, access) == (1, 0, {"restricted"})
    assert check(period_end + 2 * GRACE + timedelta(minutes=1))[0].checked == 0  # no longer due
