"""What a reconciliation calls drift (subsync/drift.py): every column Stripe's snapshot gives, and the items."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from subsync import drift
from subsync.stripe_objects import ItemSnapshot, SubscriptionSnapshot
from subsync.transitions import SubscriptionState, next_subscription_state

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MONTH = timedelta(days=30)
GRACE = timedelta(hours=72)
NOW = T0 + DAY
SEEN = T0 + timedelta(hours=1)  # the page is newer than our row

ITEM = ItemSnapshot("si_1", "price_1", "prod_1", 1, T0, T0 + MONTH)

THEIRS = SubscriptionSnapshot(
    id="sub_1",
    customer_id="cus_1",
    status="active",
    current_period_start=T0,
    current_period_end=T0 + MONTH,
    cancel_at_period_end=False,
    cancel_at=None,
    canceled_at=None,
    ended_at=None,
    trial_end=None,
    price_id="price_1",
    currency="usd",
    metadata={"plan": "pro"},
    latest_invoice_id="in_1",
    livemode=False,
    account=None,
    items=(ITEM,),
)

# For every column Stripe's snapshot says, a value ours may hold instead.
OTHER_VALUES = {
    "customer_id": "cus_other",
    "status": "past_due",
    "current_period_start": T0 - MONTH,
    "current_period_end": T0,
    "cancel_at_period_end": True,
    "cancel_at": T0 + MONTH,
    "canceled_at": T0,
    "ended_at": T0,
    "trial_end": T0 + DAY,
    "price_id": "price_other",
    "currency": "eur",
    "metadata": {},
    "latest_invoice_id": "in_old",
    "cancellation_reason": "cancellation_requested",
    "livemode": True,
    "account": "acct_other",
}


def ours_equal_to(theirs: SubscriptionSnapshot) -> SubscriptionState:
    state = next_subscription_state(None, theirs, T0, now=NOW, grace=GRACE, unpaid_invoice=None)
    assert state is not None
    return state


def verdict(ours: SubscriptionState | None, items=(ITEM,), theirs=THEIRS, **kwargs) -> drift.Verdict:
    return drift.subscription(ours, items, theirs, SEEN, now=NOW, grace=GRACE, unpaid_invoice=None, **kwargs)


def test_every_column_stripe_gives_is_compared():
    given = {f.name for f in dataclasses.fields(SubscriptionSnapshot)} - {"id", "items"}
    assert given == set(OTHER_VALUES)


def test_a_row_equal_to_stripes_is_the_same():
    assert verdict(ours_equal_to(THEIRS)) == drift.Verdict("same", {})


@pytest.mark.parametrize("column", sorted(OTHER_VALUES))
def test_a_column_that_differs_alone_is_drift_named_with_both_values(column):
    ours = dataclasses.replace(ours_equal_to(THEIRS), **{column: OTHER_VALUES[column]})
    found = verdict(ours)
    assert found.kind == "drifted"
    assert column in found.changes
    before, after = found.changes[column]
    assert before != after


def test_a_mark_for_confirmation_is_not_drift():
    marked = dataclasses.replace(ours_equal_to(THEIRS), confirm_requested_at=T0)
    assert verdict(marked) == drift.Verdict("same", {})


def test_items_that_differ_are_listed_with_their_periods():
    renewed = dataclasses.replace(ITEM, current_period_start=T0 + MONTH, current_period_end=T0 + 2 * MONTH)
    found = verdict(ours_equal_to(THEIRS), items=(renewed,))
    assert found.kind == "drifted"
    ours, theirs = found.changes["items"]
    assert ours == [
        f"si_1:price_1x1 {renewed.current_period_start.isoformat()}..{renewed.current_period_end.isoformat()}"
    ]
    assert theirs == [f"si_1:price_1x1 {T0.isoformat()}..{(T0 + MONTH).isoformat()}"]


def test_items_filed_under_another_account_are_drift():
    ours = ours_equal_to(THEIRS)
    assert verdict(ours, our_item_accounts={None}).kind == "same"
    found = verdict(ours, our_item_accounts={"acct_wrong"})
    assert found.kind == "drifted"
    assert found.changes == {"items_account": [["acct_wrong"], [None]]}
    connected = dataclasses.replace(THEIRS, account="acct_1")
    found = verdict(ours_equal_to(connected), theirs=connected, our_item_accounts={None, "acct_1"})
    assert found.changes == {"items_account": [[None, "acct_1"], ["acct_1"]]}


def test_a_row_stripe_lacks_here_is_created():
    found = verdict(None, items=())
    assert found.kind == "created"
    assert found.changes["status"] == [None, "active"]
