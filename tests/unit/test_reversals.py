"""Refunds and disputes as ledger facts (subsync.reversals), and what the worker fetches for them (worker.money)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subsync import config
from subsync.event_types import DISPUTE_EVENTS, REFUND_EVENTS, kind_of
from subsync.reversals import PaymentLinks, charge_id_of, reversal_facts, stated_key
from subsync.stripe_objects import MalformedObject, ts
from worker import prefetch
from worker.handlers.context import PAYMENT_LINKS, context_for
from worker.money import complete_reversal

CREATED = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LINKS = PaymentLinks("cus_1", "in_1", "sub_1")
T = 1748779200  # the refunds' and disputes' own `created`


def refund(ident: str = "re_1", status: str = "succeeded", amount: int = 500, **extra: Any) -> dict[str, Any]:
    obj = {"id": ident, "object": "refund", "amount": amount, "charge": "ch_1", "currency": "eur"}
    obj.update({"created": T, "status": status, "payment_intent": "pi_1", **extra})
    return obj


def charge(*refunds: dict[str, Any], listed: bool = True, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": "ch_1", "object": "charge", "amount": 2999, "customer": "cus_1", "currency": "eur"}
    obj.update({"payment_intent": "pi_1", "amount_refunded": sum(r["amount"] for r in refunds), **extra})
    if listed:
        obj["refunds"] = {"object": "list", "data": list(refunds), "has_more": False}
    return obj


def dispute(ident: str = "du_1", amount: int = 2999) -> dict[str, Any]:
    return {"id": ident, "object": "dispute", "amount": amount, "charge": "ch_1", "currency": "eur", "created": T}


def dispute_in(status: str, **changes: Any) -> dict[str, Any]:
    return {**dispute(**changes), "status": status}


def facts(event_type: str, obj: dict[str, Any], created: datetime = CREATED) -> dict[str, Any]:
    return {f.fact_key: f for f in reversal_facts(event_type, obj, created, LINKS, account="acct_1")}


# --- refunds ---


@pytest.mark.parametrize("event_type", ["refund.created", "refund.updated", "charge.refund.updated"])
def test_a_succeeded_refund_is_one_refunded_row(event_type):
    [fact] = facts(event_type, refund()).values()
    assert (fact.fact_key, fact.status, fact.amount, fact.currency) == ("refund:re_1", "REFUNDED", 500, "eur")
    assert (fact.customer_id, fact.invoice_id, fact.subscription_id) == ("cus_1", "in_1", "sub_1")
    assert (fact.occurred_at, fact.account, fact.checkout_session_id) == (ts(T), "acct_1", None)


@pytest.mark.parametrize("status", ["pending", "requires_action", "failed", "canceled"])
def test_a_refund_not_succeeded_is_no_row(status):
    assert facts("refund.updated", refund(status=status)) == {}


def test_charge_refunded_states_each_succeeded_refund_of_its_list():
    obj = charge(refund("re_1", amount=300), refund("re_2", "pending", 400), refund("re_3", amount=200))
    stated = facts("charge.refunded", obj)
    assert {k: f.amount for k, f in stated.items()} == {"refund:re_1": 300, "refund:re_3": 200}


def test_charge_refunded_without_its_whole_list_states_nothing():
    assert facts("charge.refunded", charge(refund(), listed=False)) == {}
    cut_short = charge(refund())
    cut_short["refunds"]["has_more"] = True
    assert facts("charge.refunded", cut_short) == {}


def test_every_event_of_one_refund_gives_the_same_row():
    settled = refund()
    own = sorted(REFUND_EVENTS - {"charge.refunded"})
    seen = [facts(t, settled, CREATED.replace(hour=h)) for h, t in enumerate(own)]
    seen.append(facts("charge.refunded", charge(settled), CREATED.replace(hour=9)))
    assert all(s == seen[0] for s in seen)


# --- disputes ---


@pytest.mark.parametrize("event_type", ["charge.dispute.created", "charge.dispute.funds_withdrawn"])
def test_a_chargeback_opened_is_one_disputed_row(event_type):
    [fact] = facts(event_type, dispute_in("needs_response", amount=1500)).values()
    assert (fact.fact_key, fact.status, fact.amount) == ("dispute:du_1:opened", "DISPUTED", 1500)
    assert fact.occurred_at == ts(T)
    assert (fact.customer_id, fact.invoice_id, fact.subscription_id) == ("cus_1", "in_1", "sub_1")


@pytest.mark.parametrize(("status", "outcome"), [("won", "DISPUTE_WON"), ("lost", "DISPUTE_LOST")])
def test_a_closed_chargeback_states_its_outcome_and_its_opening(status, outcome):
    stated = facts("charge.dispute.closed", dispute_in(status))
    assert {k: (f.status, f.amount) for k, f in stated.items()} == {
        "dispute:du_1:opened": ("DISPUTED", 2999),
        "dispute:du_1:closed": (outcome, 2999),
    }
    assert stated["dispute:du_1:closed"].occurred_at == CREATED  # a dispute does not say when it closed
    assert stated["dispute:du_1:opened"].occurred_at == ts(T)


@pytest.mark.parametrize("status", ["warning_needs_response", "warning_under_review", "warning_closed"])
@pytest.mark.parametrize("event_type", sorted(DISPUTE_EVENTS))
def test_an_inquiry_is_no_row(event_type, status):
    assert facts(event_type, dispute_in(status)) == {}


def test_an_inquiry_escalated_to_a_chargeback_is_opened_when_its_funds_are_withdrawn():
    assert list(facts("charge.dispute.funds_withdrawn", dispute_in("needs_response"))) == ["dispute:du_1:opened"]


def test_an_open_dispute_closes_nothing():
    assert list(facts("charge.dispute.closed", dispute_in("under_review"))) == ["dispute:du_1:opened"]


# --- which row names the event, which charge, malformed objects ---


@pytest.mark.parametrize(
    ("event_type", "obj", "key", "charge_id"),
    [
        ("charge.refunded", charge(refund()), None, "ch_1"),
        ("refund.created", refund(), "refund:re_1", "ch_1"),
        ("charge.refund.updated", refund(), "refund:re_1", "ch_1"),
        ("charge.dispute.created", dispute_in("needs_response"), "dispute:du_1:opened", "ch_1"),
        ("charge.dispute.funds_withdrawn", dispute_in("needs_response"), "dispute:du_1:opened", "ch_1"),
        ("charge.dispute.closed", dispute_in("won"), "dispute:du_1:closed", "ch_1"),
        ("invoice.paid", {"id": "in_1"}, None, None),
    ],
)
def test_the_stated_row_and_the_charge(event_type, obj, key, charge_id):
    assert stated_key(event_type, obj) == key
    assert charge_id_of(event_type, obj) == charge_id


def test_other_events_state_no_reversal():
    assert reversal_facts("charge.succeeded", charge(), CREATED, LINKS) == []
    assert reversal_facts("refund.failed", refund(status="failed"), CREATED, LINKS) == []


def test_without_links_the_rows_name_nobody():
    [fact] = reversal_facts("refund.created", refund(), CREATED, None)
    assert (fact.customer_id, fact.invoice_id, fact.subscription_id) == (None, None, None)


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [("refund.created", {"status": "succeeded", "amount": 1}), ("charge.dispute.created", {"amount": 1})],
)
def test_an_object_without_an_id_is_malformed(event_type, obj):
    with pytest.raises(MalformedObject):
        reversal_facts(event_type, obj, CREATED, LINKS)


def test_a_refund_amount_that_is_not_an_integer_is_malformed():
    with pytest.raises(MalformedObject):
        reversal_facts("refund.created", refund(amount="5.00"), CREATED, LINKS)


def test_the_event_types_are_handled_kinds():
    assert {kind_of(t) for t in REFUND_EVENTS} == {"refund"}
    assert {kind_of(t) for t in DISPUTE_EVENTS} == {"dispute"}
    assert kind_of("refund.failed") is None
    assert kind_of("charge.dispute.updated") is None


# --- any order, any number of repeats: the same rows ---

# One charge's story: refunds (some pending, settling either way) and a
# chargeback closing won or lost, told by each API version's events.


@st.composite
def stories(draw: Any) -> tuple[list[tuple[str, dict[str, Any], datetime]], dict[str, Any]]:
    acacia = draw(st.booleans())
    events: list[tuple[str, dict[str, Any], datetime]] = []
    clock = iter(range(1, 10_000))
    refunds: list[dict[str, Any]] = []
    expected: dict[str, Any] = {}

    def at() -> datetime:
        return ts(T + next(clock))

    for n in range(draw(st.integers(0, 4))):
        ending = draw(st.sampled_from(["succeeded", "pending_then_succeeded", "pending_then_failed", "pending"]))
        made = refund(f"re_{n}", "succeeded" if ending == "succeeded" else "pending", amount=100 * (n + 1))
        made["created"] = T + n
        refunds.append(made)
        events.append(("charge.refunded", charge(*[dict(r) for r in refunds]), at()))
        if acacia:
            events.append(("refund.created", dict(made), at()))
        if ending.startswith("pending_then"):
            made["status"] = ending.removeprefix("pending_then_")
            events.append(("refund.updated" if acacia else "charge.refund.updated", dict(made), at()))
            if ending.endswith("failed") and acacia:
                events.append(("refund.failed", dict(made), at()))
        if made["status"] == "succeeded":
            expected[f"refund:{made['id']}"] = ("REFUNDED", made["amount"], ts(made["created"]))
    outcome = draw(st.sampled_from([None, "open", "won", "lost", "inquiry"]))
    if outcome is not None:
        opened = dispute_in("warning_needs_response" if outcome == "inquiry" else "needs_response")
        events.append(("charge.dispute.created", opened, at()))
        if outcome != "inquiry":
            events.append(("charge.dispute.funds_withdrawn", opened, at()))
            expected["dispute:du_1:opened"] = ("DISPUTED", 2999, ts(T))
        if outcome in ("won", "lost", "inquiry"):
            closed_at = at()
            status = "warning_closed" if outcome == "inquiry" else outcome
            events.append(("charge.dispute.closed", dispute_in(status), closed_at))
            if outcome != "inquiry":
                expected["dispute:du_1:closed"] = ("DISPUTE_" + outcome.upper(), 2999, closed_at)
    return events, expected


@settings(max_examples=300, deadline=None)
@given(data=st.data(), story=stories())
def test_any_order_and_any_repeats_give_the_same_rows(data, story):
    events, expected = story
    # Every event at least once (else it was lost: the reconciliation's
    # part), some again, in any order.
    deliveries = events + data.draw(st.lists(st.sampled_from(events), max_size=10) if events else st.just([]))
    deliveries = data.draw(st.permutations(deliveries))
    ledger: dict[str, Any] = {}
    for event_type, obj, created in deliveries:
        for fact in reversal_facts(event_type, obj, created, LINKS):
            ledger.setdefault(fact.fact_key, fact)  # INSERT ... ON CONFLICT (fact_key) DO NOTHING
    # charge.refunded snapshots made before a pending refund settled never
    # state it; its settling event does, with the refund's own time.
    assert {k: (f.status, f.amount, f.occurred_at) for k, f in ledger.items()} == expected
    assert {(f.customer_id, f.invoice_id, f.subscription_id) for f in ledger.values()} <= {("cus_1", "in_1", "sub_1")}


# --- what the worker fetches first ---


class FakeApi:
    """Stripe's answers for one charge, counted: no server."""

    def __init__(self, *, basil: bool = True, refunds: list[dict[str, Any]] | None = None) -> None:
        self.basil = basil
        self.refunds = refunds or []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get(self, path: str, *, account: str | None = None, **params: Any) -> tuple[dict[str, Any], datetime]:
        self.calls.append((path, params))
        if path == "/v1/charges/ch_1":
            body = charge(listed=False) if self.basil else charge(listed=False, invoice="in_1")
        elif path == "/v1/invoice_payments":
            assert params == {"payment": {"type": "payment_intent", "payment_intent": "pi_1"}}
            body = {"data": [{"invoice": "in_0", "status": "canceled"}, {"invoice": "in_1", "status": "paid"}]}
        elif path == "/v1/invoices/in_1":
            body = {"id": "in_1", "parent": {"subscription_details": {"subscription": "sub_1"}}}
        else:
            raise AssertionError(path)
        return body, CREATED

    def charge_refunds(self, charge_id: str, *, account: str | None = None) -> list[dict[str, Any]]:
        self.calls.append((f"/v1/refunds?charge={charge_id}", {}))
        return self.refunds


def event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_1", "type": event_type, "created": T + 60, "account": None, "data": {"object": obj}}


@pytest.mark.parametrize("basil", [True, False])
def test_a_refund_event_learns_whose_payment_it_was_through_its_charge(basil):
    api = FakeApi(basil=basil)
    completed = complete_reversal(api, event("refund.created", refund()), None)  # type: ignore[arg-type]
    assert completed[PAYMENT_LINKS] == {"customer": "cus_1", "invoice": "in_1", "subscription": "sub_1"}
    asked = [path for path, _ in api.calls]
    middle = ["/v1/invoice_payments"] if basil else []
    assert asked == ["/v1/charges/ch_1", *middle, "/v1/invoices/in_1"]
    ctx = context_for("evt_1", completed, replayed=False, grace=CREATED - CREATED)
    assert ctx.links == LINKS


def test_charge_refunded_gets_its_refunds_listed_unless_it_carries_them():
    listed = [refund("re_2", amount=200), refund("re_1", amount=300)]
    api = FakeApi(refunds=listed)
    completed = complete_reversal(api, event("charge.refunded", charge(listed=False)), None)  # type: ignore[arg-type]
    assert completed["data"]["object"]["refunds"]["data"] == listed
    assert "/v1/refunds?charge=ch_1" in [path for path, _ in api.calls]
    assert "/v1/charges/ch_1" not in [path for path, _ in api.calls]  # the event's charge is the charge
    whole = FakeApi()
    complete_reversal(whole, event("charge.refunded", charge(refund())), None)  # type: ignore[arg-type]
    assert "/v1/refunds?charge=ch_1" not in [path for path, _ in whole.calls]


def test_without_an_api_key_a_refund_or_dispute_event_fails_to_be_retried():
    for event_type in sorted(REFUND_EVENTS | DISPUTE_EVENTS):
        assert prefetch.needs_fetch(event_type)
        assert prefetch.needs_fetch("v1." + event_type)
        with pytest.raises(config.ConfigError):
            prefetch.event_to_apply(None, event(event_type, refund()))
