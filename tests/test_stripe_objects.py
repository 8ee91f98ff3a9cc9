"""Parsing real Stripe payloads of both API shapes (../shared/stripe-fixtures)."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from subsync.stripe_objects import (
    MalformedObject,
    parse_checkout_session,
    parse_customer,
    parse_invoice,
    parse_subscription,
    ts,
)

# The repository sits at <root>/main with <root>/shared beside it.
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "stripe-fixtures"

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no Stripe fixtures at {FIXTURES}")


def _object_of(document):
    """A full event, pay's `data` block, or a bare object -> the object."""
    if isinstance(document.get("data"), dict) and "object" in document["data"]:
        return document["data"]["object"]
    if isinstance(document.get("object"), dict):
        return document["object"]
    return document


def _fixtures(kind):
    """(name, object) of every fixture file whose object is of `kind`."""
    if not FIXTURES.is_dir():
        return []
    found = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        if path.name == "fixtures3.json":
            continue
        obj = _object_of(json.loads(path.read_text()))
        if obj.get("object") == kind:
            found.append(pytest.param(obj, id=f"{path.parent.name}/{path.name}"))
    return found


def _load(relative):
    return _object_of(json.loads((FIXTURES / relative).read_text()))


def test_ts():
    assert ts(None) is None
    assert ts(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert ts(1745433906) == datetime(2025, 4, 23, 18, 45, 6, tzinfo=UTC)
    assert ts(1745433906).tzinfo is UTC
    with pytest.raises(MalformedObject):
        ts("1745433906")


# --- subscriptions ---


@pytest.mark.parametrize("obj", _fixtures("subscription"))
def test_every_subscription_fixture_parses(obj):
    sub = parse_subscription(obj)
    assert sub.id == obj["id"]
    assert sub.status == obj["status"]
    assert sub.current_period_end is not None
    assert sub.current_period_end.tzinfo is not None
    assert sub.price_id


def test_old_shape_period_on_subscription():
    sub = parse_subscription(_load("stripe-sync-engine/subscription_created.json"))
    assert sub.current_period_start == ts(1623148918)
    assert sub.current_period_end == ts(1625740918)
    assert sub.customer_id == "cus_IhGfebO16cMIGN"
    assert sub.price_id == "price_1IDQm5JDPojXS6LNM31hxKzp"
    assert sub.latest_invoice_id == "in_1J02NeJDPojXS6LNaiyWfNwT"
    assert sub.cancellation_reason is None  # no cancellation_details before 2023


def test_basil_shape_period_on_items():
    sub = parse_subscription(_load("pay-rails-pay/subscription.updated.json"))
    assert sub.current_period_start == ts(1486568724)
    assert sub.current_period_end == ts(1488987924)
    assert sub.status == "canceled"
    assert sub.ended_at == ts(1487872069)
    assert sub.latest_invoice_id == "in_1000"  # expanded object
    assert sub.price_id == "FFBEGINNER_00000000000000"
    assert sub.currency == "usd"


def test_openapi_subscription_has_cancellation_details_and_item_period():
    sub = parse_subscription(_load("stripe-openapi/extracted_subscription.json"))
    assert sub.current_period_end == ts(976287773)
    assert sub.cancel_at_period_end is True
    assert sub.price_id == "price_1PgafmB7WZ01zgkW6dKueIc5"


def test_items_period_takes_latest_end_with_its_start():
    obj = {
        "id": "sub_1",
        "status": "active",
        "items": {
            "data": [
                {"current_period_start": 100, "current_period_end": 200, "price": {"id": "price_a"}},
                {"current_period_start": 150, "current_period_end": 300, "price": {"id": "price_b"}},
            ]
        },
    }
    sub = parse_subscription(obj)
    assert (sub.current_period_start, sub.current_period_end) == (ts(150), ts(300))
    assert sub.price_id == "price_a"


def test_very_old_payload_uses_plan_and_expanded_customer():
    sub = parse_subscription(_load("stripe-ruby-mock/customer.subscription.trial_will_end.json"))
    assert sub.price_id == "fkx0AFo_00000000000000"
    assert sub.currency == "usd"
    sub = parse_subscription({"id": "sub_1", "status": "active", "customer": {"id": "cus_9"}, "plan": {"id": "p"}})
    assert sub.customer_id == "cus_9"
    assert sub.price_id == "p"


def test_minimal_subscription_does_not_crash():
    sub = parse_subscription({"id": "sub_1", "status": "incomplete"})
    assert sub.current_period_end is None
    assert sub.metadata == {}
    assert sub.cancel_at_period_end is False


def test_metadata_is_a_copy():
    obj = {"id": "sub_1", "status": "active", "metadata": {"a": "1"}}
    sub = parse_subscription(obj)
    obj["metadata"]["a"] = "2"
    assert sub.metadata == {"a": "1"}


@pytest.mark.parametrize("missing", ["id", "status"])
def test_subscription_without_identity_is_malformed(missing):
    obj = dict(_load("stripe-ruby-mock/customer.subscription.updated.json"))
    del obj[missing]
    with pytest.raises(MalformedObject, match=missing):
        parse_subscription(obj)


# --- invoices ---


@pytest.mark.parametrize("obj", _fixtures("invoice"))
def test_every_invoice_fixture_parses_except_previews(obj):
    if obj.get("id") is None:  # invoice.upcoming: a preview, never stored
        with pytest.raises(MalformedObject, match="id"):
            parse_invoice(obj)
        return
    inv = parse_invoice(obj)
    assert inv.id == obj["id"]
    assert inv.status == obj["status"]
    assert isinstance(inv.amount_due, int)


def test_old_shape_invoice_subscription_and_line_period():
    inv = parse_invoice(_load("stripe-sync-engine/invoice_paid.json"))
    assert inv.subscription_id == "sub_JsuPyCPhXWfZar"
    # The subscription line's period (the one paid for), not the invoice-level
    # one (1639966880..1642645280), which is the period that just ended.
    assert (inv.period_start, inv.period_end) == (ts(1642645280), ts(1645323680))
    assert inv.paid_at is not None
    assert inv.billing_reason == "subscription_cycle"


def test_basil_invoice_subscription_from_parent_and_line_parent():
    inv = parse_invoice(_load("pay-rails-pay/invoice.payment_failed.json"))
    assert inv.subscription_id == "sub_1234"
    assert (inv.period_start, inv.period_end) == (ts(1745433906), ts(1776969906))
    assert inv.attempt_count == 1
    assert inv.next_payment_attempt == ts(1745552783)
    assert inv.paid_at is None


def test_hybrid_invoice_has_both_links():
    inv = parse_invoice(_load("pay-rails-pay/invoice.payment_action_required.json"))
    assert inv.subscription_id == "sub_1234"
    assert (inv.period_start, inv.period_end) == (ts(1742491752), ts(1745170115))


def test_invoice_without_subscription_line_falls_back_to_invoice_period():
    inv = parse_invoice(_load("pay-rails-pay/invoice.json"))
    assert inv.subscription_id is None
    assert (inv.period_start, inv.period_end) == (ts(1744986175), ts(1744986175))


def test_proration_lines_lose_to_the_regular_line():
    obj = {
        "id": "in_1",
        "status": "open",
        "parent": {"subscription_details": {"subscription": {"id": "sub_1"}}},
        "lines": {
            "data": [
                {
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"proration": True, "subscription": "sub_1"},
                    },
                    "period": {"start": 150, "end": 300},
                },
                {
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"proration": False, "subscription": "sub_1"},
                    },
                    "period": {"start": 200, "end": 300},
                },
            ]
        },
    }
    inv = parse_invoice(obj)
    assert inv.subscription_id == "sub_1"
    assert inv.period_start == ts(200)


def test_subscription_id_from_line_when_invoice_has_no_link():
    obj = {
        "id": "in_1",
        "status": "open",
        "lines": {
            "data": [
                {"parent": {"subscription_item_details": {"subscription": "sub_7"}}, "period": {"start": 1, "end": 2}}
            ]
        },
    }
    assert parse_invoice(obj).subscription_id == "sub_7"


def test_minimal_invoice_does_not_crash():
    inv = parse_invoice({"id": "in_1", "status": "draft"})
    assert (inv.amount_due, inv.amount_paid, inv.attempt_count) == (0, 0, 0)
    assert inv.period_end is None


@pytest.mark.parametrize("missing", ["id", "status"])
def test_invoice_without_identity_is_malformed(missing):
    obj = dict(_load("stripe-sync-engine/invoice_paid.json"))
    del obj[missing]
    with pytest.raises(MalformedObject, match=missing):
        parse_invoice(obj)


def test_not_an_object_is_malformed():
    with pytest.raises(MalformedObject):
        parse_invoice(["in_1"])


# --- checkout sessions and customers ---


@pytest.mark.parametrize("obj", _fixtures("checkout.session"))
def test_every_checkout_fixture_parses(obj):
    cs = parse_checkout_session(obj)
    assert cs.id == obj["id"]
    assert cs.mode in ("payment", "subscription", "setup")


def test_checkout_fields():
    cs = parse_checkout_session(_load("pay-rails-pay/checkout.session.completed.json"))
    assert (cs.mode, cs.payment_status, cs.status) == ("subscription", "paid", "complete")
    assert cs.subscription_id == "sub_1LNkeSKXBGcbgpbZ7jMqOPSi"
    assert (cs.amount_total, cs.currency) == (1900, "usd")
    cs = parse_checkout_session(_load("stripe-sync-engine/checkout_session_completed.json"))
    assert cs.invoice_id == "in_1KJqKBJDPojXS6LNJbvLUgEy"
    setup = parse_checkout_session(_load("stripe-ruby-mock/checkout.session.completed.setup_mode.json"))
    assert setup.amount_total is None


def test_checkout_without_id_is_malformed():
    with pytest.raises(MalformedObject, match="id"):
        parse_checkout_session({"mode": "payment"})


@pytest.mark.parametrize("obj", _fixtures("customer"))
def test_every_customer_fixture_parses(obj):
    cus = parse_customer(obj)
    assert cus.id == obj["id"]
    assert cus.deleted is False


def test_deleted_customer():
    assert parse_customer({"id": "cus_1", "object": "customer", "deleted": True}).deleted is True
    assert parse_customer(_load("stripe-openapi/extracted_customer.json"), deleted=True).deleted is True


def test_customer_without_id_is_malformed():
    with pytest.raises(MalformedObject, match="id"):
        parse_customer({"email": "a@example.org"})
