"""What a reactivation asks of Stripe (subsync/reactivation.py), and a settled debt (subsync/transitions.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from subsync.access import Access
from subsync.reactivation import REACTIVATES, NotReactivatable, days_used, plan, reactivated_by
from subsync.stripe_objects import ItemSnapshot
from subsync.transitions import InvoiceState, SubscriptionState, settled_by_reactivation, unpaid_invoice_for_owed
from worker.handlers import lock_keys

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def suspended(**changes: object) -> SubscriptionState:
    values: dict[str, object] = {
        "id": "sub_old",
        "customer_id": "cus_1",
        "status": "canceled",
        "access": Access.SUSPENDED,
        "current_period_start": T0,
        "current_period_end": T0 + 31 * DAY,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": T0 + 7 * DAY,
        "ended_at": T0 + 7 * DAY,
        "trial_end": None,
        "price_id": "price_monthly",
        "currency": "usd",
        "metadata": {},
        "latest_invoice_id": "in_1",
        "owed_amount": 677,
        "stripe_updated_at": T0 + 7 * DAY,
        "cancellation_reason": "payment_failed",
        "livemode": False,
        "account": None,
    }
    values.update(changes)
    return SubscriptionState(**values)  # type: ignore[arg-type]


def invoice(**changes: object) -> InvoiceState:
    values: dict[str, object] = {
        "id": "in_1",
        "subscription_id": "sub_old",
        "customer_id": "cus_1",
        "status": "open",
        "amount_due": 2999,
        "amount_paid": 0,
        "currency": "usd",
        "period_start": T0,
        "period_end": T0 + 31 * DAY,
        "attempt_count": 4,
        "next_payment_attempt": None,
        "created_at": T0,
        "paid_at": None,
        "stripe_updated_at": T0 + 7 * DAY,
        "account": None,
    }
    values.update(changes)
    return InvoiceState(**values)  # type: ignore[arg-type]


def item(price: str, quantity: int | None = 1, item_id: str = "si_1") -> ItemSnapshot:
    return ItemSnapshot(item_id, price, "prod_1", quantity, T0, T0 + 31 * DAY)


def test_a_reactivation_charges_the_owed_days_on_a_new_subscription_without_trial():
    the_plan = plan(suspended(), [item("price_monthly")], invoice())
    assert the_plan.invoice_item_params() == {
        "customer": "cus_1",
        "amount": 677,
        "currency": "usd",
        "description": "Unpaid use of sub_old: 7 days from 2026-03-01 to 2026-03-08",
        "metadata": {REACTIVATES: "sub_old"},
    }
    assert the_plan.subscription_params() == {
        "customer": "cus_1",
        "items": [{"price": "price_monthly", "quantity": 1}],
        "trial_end": "now",
        "metadata": {REACTIVATES: "sub_old"},
    }
    assert the_plan.unpaid_invoice_id == "in_1"


def test_the_idempotency_keys_are_the_same_for_the_same_request_and_differ_for_another():
    one = plan(suspended(), [item("price_monthly")], invoice())
    same = plan(suspended(), [item("price_monthly", item_id="si_other")], invoice())
    assert (one.invoice_item_key, one.subscription_key) == (same.invoice_item_key, same.subscription_key)
    assert one.invoice_item_key.startswith("subsync-reactivate-sub_old-")
    assert one.invoice_item_key != one.subscription_key
    # Stripe refuses a key sent again with other parameters.
    assert (
        plan(suspended(), [item("price_monthly")], invoice(), price="price_x").subscription_key != one.subscription_key
    )
    assert plan(suspended(owed_amount=5), [item("price_monthly")], invoice()).invoice_item_key != one.invoice_item_key
    assert plan(suspended(id="sub_two"), [], invoice()).subscription_key != one.subscription_key


def test_every_item_comes_back_with_its_quantity_unless_a_price_is_given():
    items = [item("price_a", 2, "si_1"), item("price_b", None, "si_2")]
    assert plan(suspended(), items, invoice()).items == (("price_a", 2), ("price_b", 1))
    assert plan(suspended(), items, invoice(), price="price_new").items == (("price_new", 1),)
    # No items stored (an old row): the subscription's own price.
    assert plan(suspended(), [], invoice()).items == (("price_monthly", 1),)
    with pytest.raises(NotReactivatable, match="--price"):
        plan(suspended(price_id=None), [], invoice())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"access": Access.RESTRICTED, "status": "past_due"}, "not suspended"),
        ({"access": Access.NONE, "cancellation_reason": "cancellation_requested"}, "not suspended"),
        ({"status": "unpaid", "ended_at": None, "canceled_at": None}, "open invoice is paid"),
        ({"owed_amount": None}, "reconcile run"),
        ({"customer_id": None}, "no customer"),
    ],
)
def test_what_cannot_be_reactivated_says_why(changes, reason):
    with pytest.raises(NotReactivatable, match=reason):
        plan(suspended(**changes), [item("price_monthly")], invoice())


def test_nothing_owed_still_reactivates_with_a_zero_item():
    the_plan = plan(suspended(owed_amount=0), [item("price_monthly")], invoice())
    assert the_plan.owed_amount == 0


@pytest.mark.parametrize(
    ("ended", "days"),
    [
        (T0 - DAY, 0),  # before the period
        (T0 + timedelta(hours=11), 0),
        (T0 + timedelta(hours=12), 1),  # half up
        (T0 + 7 * DAY, 7),
        (T0 + 40 * DAY, 31),  # capped at the period
        (None, 0),
    ],
)
def test_days_used(ended, days):
    assert days_used(invoice(), ended) == days


def test_days_used_is_zero_without_an_invoice_period():
    assert days_used(None, T0) == 0
    assert days_used(invoice(period_start=None), T0 + DAY) == 0


def test_a_settled_debt_is_zero_and_stays_zero_whatever_the_invoice_says():
    settled = settled_by_reactivation(suspended())
    assert settled.owed_amount == 0
    assert settled_by_reactivation(suspended(access=Access.FULL, owed_amount=None)).owed_amount is None
    invoices = [invoice()]
    assert unpaid_invoice_for_owed(invoices, "sub_old") == invoices[0]
    assert unpaid_invoice_for_owed(invoices, "sub_old", settled=True) is None


@pytest.mark.parametrize(
    "invoice",
    [
        {"parent": {"subscription_details": {"subscription": "sub_new", "metadata": {REACTIVATES: "sub_old"}}}},
        {"subscription": "sub_new", "subscription_details": {"metadata": {REACTIVATES: "sub_old"}}},  # before basil
    ],
)
def test_an_invoice_of_a_reactivation_locks_the_old_subscription_with_its_own(invoice):
    # Paying it settles the old one: that lock is taken up front, in key order, not late.
    event = {"id": "in_1", "object": "invoice", **invoice}
    assert reactivated_by(event) == "sub_old"
    assert lock_keys("invoice.paid", event) == ["subscription:sub_new", "subscription:sub_old"]


def test_any_other_invoice_locks_its_subscription_only():
    plain = {"id": "in_1", "parent": {"subscription_details": {"subscription": "sub_new", "metadata": {"a": "b"}}}}
    assert reactivated_by(plain) is None
    assert lock_keys("invoice.paid", plain) == ["subscription:sub_new"]
    assert lock_keys("invoice.paid", {"id": "in_2", "parent": None}) == ["invoice:in_2"]
