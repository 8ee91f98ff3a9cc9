"""Parsing Stripe objects of both API shapes: hand-made ones, and real payloads (tests/stripe_fixtures.py)."""

from datetime import UTC, datetime

import pytest
from stripe_fixtures import needs_fixtures, object_of, objects_of_kind, read

from subsync.stripe_objects import (
    Entitlement,
    EntitlementSummary,
    MalformedObject,
    entitlement_set,
    parse_active_entitlement,
    parse_checkout_session,
    parse_customer,
    parse_entitlement_summary,
    parse_invoice,
    parse_subscription,
    summary_customer_id,
    ts,
)


def _load(relative):
    return object_of(read(relative))


def test_ts():
    assert ts(None) is None
    assert ts(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert ts(1745433906) == datetime(2025, 4, 23, 18, 45, 6, tzinfo=UTC)
    assert ts(1745433906).tzinfo is UTC
    with pytest.raises(MalformedObject):
        ts("1745433906")


# --- subscriptions ---


@pytest.mark.parametrize("obj", objects_of_kind("subscription"))
def test_every_subscription_fixture_parses(obj):
    sub = parse_subscription(obj)
    assert sub.id == obj["id"]
    assert sub.status == obj["status"]
    assert sub.current_period_end is not None
    assert sub.current_period_end.tzinfo is not None
    assert sub.price_id


@needs_fixtures
def test_old_shape_period_on_subscription():
    sub = parse_subscription(_load("stripe-sync-engine/subscription_created.json"))
    assert sub.current_period_start == ts(1623148918)
    assert sub.current_period_end == ts(1625740918)
    assert sub.customer_id == "cus_IhGfebO16cMIGN"
    assert sub.price_id == "price_1IDQm5JDPojXS6LNM31hxKzp"
    assert sub.latest_invoice_id == "in_1J02NeJDPojXS6LNaiyWfNwT"
    assert sub.cancellation_reason is None  # no cancellation_details before 2023


@needs_fixtures
def test_basil_shape_period_on_items():
    sub = parse_subscription(_load("pay-rails-pay/subscription.updated.json"))
    assert sub.current_period_start == ts(1486568724)
    assert sub.current_period_end == ts(1488987924)
    assert sub.status == "canceled"
    assert sub.ended_at == ts(1487872069)
    assert sub.latest_invoice_id == "in_1000"  # expanded object
    assert sub.price_id == "FFBEGINNER_00000000000000"
    assert sub.currency == "usd"


@needs_fixtures
def test_openapi_subscription_has_cancellation_details_and_item_period():
    sub = parse_subscription(_load("stripe-openapi/extracted_subscription.json"))
    assert sub.current_period_end == ts(976287773)
    assert sub.cancel_at_period_end is True
    assert sub.price_id == "price_1PgafmB7WZ01zgkW6dKueIc5"


def test_the_period_is_the_items_that_renews_first_with_its_start():
    # A yearly add-on listed first, a monthly base second: the next renewal is the base's.
    obj = {
        "id": "sub_1",
        "status": "active",
        "items": {
            "data": [
                {"id": "si_y", "current_period_start": 100, "current_period_end": 900, "price": {"id": "price_y"}},
                {"id": "si_m", "current_period_start": 150, "current_period_end": 300, "price": {"id": "price_m"}},
            ]
        },
    }
    sub = parse_subscription(obj)
    assert (sub.current_period_start, sub.current_period_end) == (ts(150), ts(300))
    assert sub.price_id == "price_y"  # the first item's
    assert [(i.id, i.price_id, i.current_period_end) for i in sub.items] == [
        ("si_y", "price_y", ts(900)),
        ("si_m", "price_m", ts(300)),
    ]


def test_before_basil_every_item_has_the_subscriptions_period():
    obj = {
        **MINIMAL,
        "current_period_start": 100,
        "current_period_end": 200,
        "items": {"data": [{"id": "si_1", "plan": {"id": "plan_a", "product": "prod_a"}, "quantity": 3}]},
    }
    (item,) = parse_subscription(obj, account="acct_1").items
    assert (item.price_id, item.product_id, item.quantity) == ("plan_a", "prod_a", 3)
    assert (item.current_period_start, item.current_period_end) == (ts(100), ts(200))
    assert parse_subscription(obj, account="acct_1").account == "acct_1"


def test_an_item_without_an_id_is_malformed():
    with pytest.raises(MalformedObject, match="item"):
        parse_subscription({**MINIMAL, "items": {"data": [{"price": {"id": "p"}}]}})


@needs_fixtures
def test_very_old_payload_uses_plan_and_expanded_customer():
    sub = parse_subscription(_load("stripe-ruby-mock/customer.subscription.trial_will_end.json"))
    assert sub.price_id == "fkx0AFo_00000000000000"
    assert sub.currency == "usd"
    old = {**MINIMAL, "customer": {"id": "cus_9"}, "plan": {"id": "p"}, "items": {"data": []}}
    sub = parse_subscription(old)
    assert sub.customer_id == "cus_9"
    assert sub.price_id == "p"


# The least a subscription carries: identity, items and a current period.
MINIMAL = {"id": "sub_1", "status": "incomplete", "items": {"data": []}, "current_period_end": 1746000000}


def test_minimal_subscription_does_not_crash():
    sub = parse_subscription(MINIMAL)
    assert sub.current_period_end == ts(1746000000)
    assert sub.metadata == {}
    assert sub.cancel_at_period_end is False


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        pytest.param({"id": "sub_1", "status": "active"}, "items", id="no items"),
        pytest.param({"id": "sub_1", "status": "active", "items": {"data": [{"id": "si_1"}]}}, "period", id="basil"),
        pytest.param({"id": "sub_1", "status": "active", "items": {"data": []}}, "period", id="before basil"),
    ],
)
def test_a_subscription_without_items_or_a_period_is_malformed(obj, reason):
    with pytest.raises(MalformedObject, match=reason):
        parse_subscription(obj)


def test_metadata_is_a_copy():
    obj = {**MINIMAL, "status": "active", "metadata": {"a": "1"}}
    sub = parse_subscription(obj)
    obj["metadata"]["a"] = "2"
    assert sub.metadata == {"a": "1"}


@needs_fixtures
@pytest.mark.parametrize("missing", ["id", "status"])
def test_subscription_without_identity_is_malformed(missing):
    obj = dict(_load("stripe-ruby-mock/customer.subscription.updated.json"))
    del obj[missing]
    with pytest.raises(MalformedObject, match=missing):
        parse_subscription(obj)


# --- invoices ---


@pytest.mark.parametrize("obj", objects_of_kind("invoice"))
def test_every_invoice_fixture_parses_except_previews(obj):
    if obj.get("id") is None:  # invoice.upcoming: a preview, never stored
        with pytest.raises(MalformedObject, match="id"):
            parse_invoice(obj)
        return
    inv = parse_invoice(obj)
    assert inv.id == obj["id"]
    assert inv.status == obj["status"]
    assert isinstance(inv.amount_due, int)


@needs_fixtures
def test_old_shape_invoice_subscription_and_line_period():
    inv = parse_invoice(_load("stripe-sync-engine/invoice_paid.json"))
    assert inv.subscription_id == "sub_JsuPyCPhXWfZar"
    # The subscription line's period (the one paid for), not the invoice-level
    # one (1639966880..1642645280), which is the period that just ended.
    assert (inv.period_start, inv.period_end) == (ts(1642645280), ts(1645323680))
    assert inv.paid_at is not None


@needs_fixtures
def test_basil_invoice_subscription_from_parent_and_line_parent():
    inv = parse_invoice(_load("pay-rails-pay/invoice.payment_failed.json"))
    assert inv.subscription_id == "sub_1234"
    assert (inv.period_start, inv.period_end) == (ts(1745433906), ts(1776969906))
    assert inv.attempt_count == 1
    assert inv.next_payment_attempt == ts(1745552783)
    assert inv.paid_at is None


@needs_fixtures
def test_hybrid_invoice_has_both_links():
    inv = parse_invoice(_load("pay-rails-pay/invoice.payment_action_required.json"))
    assert inv.subscription_id == "sub_1234"
    assert (inv.period_start, inv.period_end) == (ts(1742491752), ts(1745170115))


@needs_fixtures
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


@needs_fixtures
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


@pytest.mark.parametrize("obj", objects_of_kind("checkout.session"))
def test_every_checkout_fixture_parses(obj):
    cs = parse_checkout_session(obj)
    assert cs.id == obj["id"]
    assert cs.mode in ("payment", "subscription", "setup")


@needs_fixtures
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


@pytest.mark.parametrize("obj", objects_of_kind("customer"))
def test_every_customer_fixture_parses(obj):
    cus = parse_customer(obj)
    assert cus.id == obj["id"]
    assert cus.deleted is False


@needs_fixtures
def test_deleted_customer():
    assert parse_customer({"id": "cus_1", "object": "customer", "deleted": True}).deleted is True
    assert parse_customer(_load("stripe-openapi/extracted_customer.json"), deleted=True).deleted is True


def test_customer_without_id_is_malformed():
    with pytest.raises(MalformedObject, match="id"):
        parse_customer({"email": "a@example.org"})


# --- entitlements -------------------------------------------------------------------------


def _entitlement(feature="feat_1", key="api", ident="ent_1"):
    return {"id": ident, "object": "entitlements.active_entitlement", "feature": feature, "livemode": False,
            "lookup_key": key}  # fmt: skip


def _summary(*entitlements, has_more=False, customer="cus_1"):
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer,
        "entitlements": {"object": "list", "data": list(entitlements), "has_more": has_more, "url": "/v1/x"},
        "livemode": False,
    }


def test_a_summary_reads_as_one_entitlement_per_feature_in_feature_order():
    summary = parse_entitlement_summary(
        _summary(_entitlement("feat_b", "sso", "ent_b"), _entitlement("feat_a", "api", "ent_a")), account="acct_1"
    )
    assert summary == EntitlementSummary(
        customer_id="cus_1",
        entitlements=(Entitlement("feat_a", "api", "ent_a"), Entitlement("feat_b", "sso", "ent_b")),
        has_more=False,
        account="acct_1",
    )


def test_a_summary_cut_short_says_so_and_an_empty_one_is_an_empty_set():
    assert parse_entitlement_summary(_summary(_entitlement(), has_more=True)).has_more is True
    empty = parse_entitlement_summary(_summary())
    assert (empty.entitlements, empty.has_more) == ((), False)


def test_an_expanded_feature_or_customer_reads_as_its_id_and_a_repeated_feature_counts_once():
    expanded = _entitlement(feature={"id": "feat_x", "object": "entitlements.feature", "lookup_key": "x"}, key="x")
    summary = parse_entitlement_summary(
        _summary(expanded, _entitlement("feat_x", "x", "ent_2"), customer={"id": "cus_9", "object": "customer"})
    )
    assert summary.customer_id == "cus_9"
    assert summary.entitlements == (Entitlement("feat_x", "x", "ent_1"),)
    assert entitlement_set([Entitlement("b", "k"), Entitlement("a", "j"), Entitlement("b", "other")]) == (
        Entitlement("a", "j"),
        Entitlement("b", "k"),
    )


@pytest.mark.parametrize(
    ("obj", "names"),
    [
        ({"object": "entitlements.active_entitlement_summary", "entitlements": {"data": []}}, "customer"),
        ({"customer": "cus_1"}, "entitlements"),
        ({"customer": "cus_1", "entitlements": {"data": "no"}}, "entitlements"),
        ({"customer": 7, "entitlements": {"data": []}}, "customer"),
        (_summary({"object": "entitlements.active_entitlement", "lookup_key": "api"}), "feature"),
        (_summary({"object": "entitlements.active_entitlement", "feature": "feat_1"}), "lookup_key"),
        (_summary(_entitlement(key=5)), "lookup_key"),
    ],
)
def test_a_summary_without_what_identifies_it_is_refused_naming_the_field(obj, names):
    with pytest.raises(MalformedObject, match=names):
        parse_entitlement_summary(obj)


def test_the_customer_of_a_summary_for_its_lock():
    assert summary_customer_id(_summary()) == "cus_1"
    assert summary_customer_id({"entitlements": {}}) is None


@needs_fixtures
def test_stripes_own_summary_and_active_entitlement_examples():
    resources = read("stripe-openapi/fixtures3.json")["resources"]
    summary = parse_entitlement_summary(resources["entitlements.active_entitlement_summary"])
    assert summary.has_more is True
    assert summary.entitlements == (Entitlement("obj_123", "lookup_key", "obj_123"),)
    active = parse_active_entitlement(resources["entitlements.active_entitlement"])
    assert (active.feature_id, active.lookup_key) == ("feat_test_61QGU1MWyFMSP9YBZ41ClCIKljWvsTgu", "something")
