"""The ledger table of docs/interface.md, one test per row, and the event types."""

from datetime import UTC, datetime

import pytest
from stripe_fixtures import needs_fixtures, read

from subsync.event_types import HANDLED_EVENTS, is_applied, is_preview, kind_of
from subsync.ledger import ledger_fact
from subsync.stripe_objects import MalformedObject, ts

CREATED = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def invoice(**changes):
    obj = {
        "id": "in_1",
        "object": "invoice",
        "status": "paid",
        "customer": "cus_1",
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1"}},
        "amount_due": 2999,
        "amount_paid": 2999,
        "currency": "eur",
        "attempt_count": 1,
        "status_transitions": {"paid_at": 1746000000},
    }
    obj.update(changes)
    return obj


def session(**changes):
    obj = {
        "id": "cs_1",
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "customer": "cus_1",
        "amount_total": 5000,
        "currency": "usd",
    }
    obj.update(changes)
    return obj


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
def test_invoice_paid_is_one_completed_fact(event_type):
    fact = ledger_fact(event_type, invoice(), CREATED)
    assert fact.fact_key == "invoice:in_1:completed"
    assert (fact.status, fact.amount, fact.currency) == ("COMPLETED", 2999, "eur")
    assert (fact.customer_id, fact.subscription_id, fact.invoice_id) == ("cus_1", "sub_1", "in_1")
    assert fact.checkout_session_id is None
    assert fact.occurred_at == ts(1746000000)


def test_both_paid_events_give_the_same_fact():
    paid = ledger_fact("invoice.paid", invoice(), CREATED)
    succeeded = ledger_fact("invoice.payment_succeeded", invoice(), CREATED.replace(second=1))
    assert paid == succeeded


def test_paid_without_paid_at_uses_the_event_time():
    fact = ledger_fact("invoice.paid", invoice(status_transitions=None), CREATED)
    assert fact.occurred_at == CREATED


def test_failed_attempts_are_distinct_facts():
    first = ledger_fact("invoice.payment_failed", invoice(status="open", amount_paid=0), CREATED)
    second = ledger_fact("invoice.payment_failed", invoice(status="open", amount_paid=0, attempt_count=2), CREATED)
    assert first.fact_key == "invoice:in_1:failed:1"
    assert second.fact_key == "invoice:in_1:failed:2"
    assert (first.status, first.amount, first.occurred_at) == ("FAILED", 2999, CREATED)


def test_a_repeated_failure_event_is_the_same_fact():
    obj = invoice(status="open", amount_paid=0, attempt_count=3)
    assert (
        ledger_fact("invoice.payment_failed", obj, CREATED).fact_key
        == ledger_fact("invoice.payment_failed", obj, CREATED.replace(minute=5)).fact_key
    )


@pytest.mark.parametrize("event_type", ["checkout.session.completed", "checkout.session.async_payment_succeeded"])
def test_paid_checkout_in_payment_mode_is_completed(event_type):
    fact = ledger_fact(event_type, session(), CREATED)
    assert fact.fact_key == "checkout:cs_1:completed"
    assert (fact.status, fact.amount, fact.checkout_session_id, fact.occurred_at) == (
        "COMPLETED",
        5000,
        "cs_1",
        CREATED,
    )


def test_checkout_in_subscription_mode_is_no_fact():
    obj = session(mode="subscription", subscription="sub_1")
    assert ledger_fact("checkout.session.completed", obj, CREATED) is None
    assert ledger_fact("checkout.session.async_payment_succeeded", obj, CREATED) is None


def test_checkout_completed_with_payment_pending_is_no_fact_yet():
    assert ledger_fact("checkout.session.completed", session(payment_status="unpaid"), CREATED) is None


def test_setup_mode_checkout_is_no_fact():
    obj = session(mode="setup", payment_status="no_payment_required", amount_total=None)
    assert ledger_fact("checkout.session.completed", obj, CREATED) is None


def test_async_payment_failed_is_failed():
    fact = ledger_fact("checkout.session.async_payment_failed", session(payment_status="unpaid"), CREATED)
    assert (fact.fact_key, fact.status, fact.amount) == ("checkout:cs_1:failed", "FAILED", 5000)


def test_expired_is_expired_with_amount_or_zero():
    fact = ledger_fact("checkout.session.expired", session(status="expired", payment_status="unpaid"), CREATED)
    assert (fact.fact_key, fact.status, fact.amount) == ("checkout:cs_1:expired", "EXPIRED", 5000)
    fact = ledger_fact("checkout.session.expired", session(status="expired", amount_total=None), CREATED)
    assert fact.amount == 0


def test_subscription_deleted_is_cancelled_with_zero():
    obj = {
        "id": "sub_1",
        "object": "subscription",
        "status": "canceled",
        "customer": "cus_1",
        "currency": "usd",
        "canceled_at": 1746000000,
        "ended_at": 1746000100,
        "items": {"data": [{"id": "si_1", "current_period_start": 1743000000, "current_period_end": 1746000000}]},
    }
    fact = ledger_fact("customer.subscription.deleted", obj, CREATED)
    assert (fact.fact_key, fact.status, fact.amount) == ("subscription:sub_1:cancelled", "CANCELLED", 0)
    assert (fact.subscription_id, fact.customer_id, fact.occurred_at) == ("sub_1", "cus_1", ts(1746000100))


@pytest.mark.parametrize(
    "event_type",
    [
        "invoice.created",
        "invoice.finalized",
        "invoice.updated",
        "invoice.voided",
        "invoice.marked_uncollectible",
        "invoice.payment_action_required",
        "customer.subscription.updated",
        "customer.updated",
        "charge.succeeded",
        # Refunds and disputes are facts of subsync.reversals (tests/unit/test_reversals.py).
        "charge.refunded",
        "charge.dispute.created",
    ],
)
def test_other_events_are_no_fact(event_type):
    assert ledger_fact(event_type, invoice(), CREATED) is None


def test_malformed_object_raises():
    with pytest.raises(MalformedObject):
        ledger_fact("invoice.paid", {"status": "paid"}, CREATED)


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "expected_key"),
    [
        ("stripe-sync-engine/invoice_paid.json", "invoice:in_1KJqKBJDPojXS6LNJbvLUgEy:completed"),
        ("stripe-ruby-mock/invoice.payment_succeeded.json", "invoice:in_000000000000000000000000:completed"),
        ("pay-rails-pay/invoice.payment_failed.json", "invoice:in_1234:failed:1"),
        ("stripe-sync-engine/checkout_session_completed.json", None),  # event type comes from the file
        ("stripe-sync-engine/subscription_deleted.json", "subscription:sub_JdIzvfy6o5GZRd:cancelled"),
    ],
)
def test_real_payloads(name, expected_key):
    document = read(name)
    event_type = document.get("type") or "invoice.payment_failed"
    obj = document["data"]["object"] if "data" in document else document["object"]
    fact = ledger_fact(event_type, obj, CREATED)
    if expected_key is None:
        expected_key = f"checkout:{obj['id']}:completed"
    assert fact.fact_key == expected_key


# --- event types ---


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("customer.subscription.created", "subscription"),
        ("customer.subscription.trial_will_end", "subscription"),
        ("customer.subscription.pending_update_applied", "subscription"),
        ("invoice.payment_failed", "invoice"),
        ("invoice.upcoming", "invoice"),
        ("invoice.updated", "invoice"),
        ("checkout.session.async_payment_failed", "checkout"),
        ("customer.deleted", "customer"),
        ("customer.source.created", None),
        ("invoiceitem.created", None),
        ("invoice.deleted", None),
        ("charge.succeeded", None),
        ("charge.refunded", "refund"),
        ("refund.updated", "refund"),
        ("charge.refund.updated", "refund"),
        ("refund.failed", None),
        ("charge.dispute.closed", "dispute"),
        ("charge.dispute.updated", None),
    ],
)
def test_kind_of(event_type, kind):
    assert kind_of(event_type) == kind


def test_only_upcoming_is_a_preview():
    assert is_preview("invoice.upcoming")
    assert [t for t in HANDLED_EVENTS if is_preview(t)] == ["invoice.upcoming"]
    assert len(HANDLED_EVENTS) == 7 + 10 + 4 + 3 + 1 + 4 + 3


def test_is_applied_says_which_events_are_queued_for_the_worker():
    assert is_applied("customer.subscription.updated")
    assert is_applied("invoice.upcoming")  # processed: a forecast, nothing stored
    assert is_applied("v1.invoice.paid")
    assert is_applied("v2.core.health.event_generation_failure.resolved")
    assert not is_applied("v1.invoice.upcoming")  # a thin forecast names nothing to fetch
    assert not is_applied("charge.succeeded")
    assert not is_applied("v1.charge.succeeded")
    assert not is_applied("v2.core.account.updated")
