"""The summary event in the worker (its kind, its lock, when it needs the API) and the rule of which set is newer."""

from datetime import UTC, datetime, timedelta

import pytest

from subsync import config, event_types
from subsync.stripe_objects import Entitlement, previous_entitlements
from subsync.transitions import is_newer_entitlement_set
from worker import prefetch
from worker.entitlements import complete_summary
from worker.handlers import lock_keys

SUMMARY = "entitlements.active_entitlement_summary.updated"


def _event(has_more: bool) -> dict:
    data = [{"id": "ent_1", "object": "entitlements.active_entitlement", "feature": "feat_1", "lookup_key": "api"}]
    return {
        "id": "evt_1",
        "type": SUMMARY,
        "created": 1_750_000_000,
        "data": {
            "object": {
                "object": "entitlements.active_entitlement_summary",
                "customer": "cus_1",
                "entitlements": {"object": "list", "data": data, "has_more": has_more},
            }
        },
    }


def test_the_summary_is_handled_and_locks_its_customers_entitlements():
    assert event_types.kind_of(SUMMARY) == "entitlements"
    assert lock_keys(SUMMARY, _event(False)["data"]["object"]) == ["entitlements:cus_1"]
    assert lock_keys(SUMMARY, {"object": "entitlements.active_entitlement_summary"}) == []
    assert prefetch.needs_fetch(SUMMARY)
    assert prefetch.needs_fetch("v1." + SUMMARY)


def test_a_whole_summary_is_applied_as_it_came_without_asking_stripe():
    event = _event(False)
    assert complete_summary(None, event) is event


def test_a_summary_cut_short_needs_the_api():
    with pytest.raises(config.ConfigError, match="STRIPE_API_KEY"):
        complete_summary(None, _event(True))


T = datetime(2025, 6, 1, tzinfo=UTC)
A = (Entitlement("feat_a", "api", "ent_a"),)
AB = (Entitlement("feat_a", "api", "ent_a"), Entitlement("feat_b", "sso", "ent_b"))


@pytest.mark.parametrize(
    ("seen_at", "previous", "held", "newer"),
    [
        (T + timedelta(seconds=1), None, A, True),  # a later second: applied
        (T + timedelta(seconds=1), (), A, True),  # whatever it says came before
        (T - timedelta(seconds=1), None, A, False),  # an earlier second: skipped
        (T - timedelta(seconds=1), A, A, False),
        (T, A, A, True),  # same second, the next step after the set held
        (T, (), A, False),  # same second, a step before the set held, delivered late
        (T, (), AB, False),
        (T, None, A, True),  # same second, predecessor unknown (a list read from the API): applied
    ],
)
def test_which_set_is_newer(seen_at, previous, held, newer):
    assert is_newer_entitlement_set(T, held, seen_at, previous) is newer


def test_a_same_second_chain_delivered_in_any_order_ends_in_its_last_set():
    # () -> A -> AB in one second, after () was held from an earlier one.
    steps = [((), A), (A, AB)]
    for order in (steps, steps[::-1]):
        held_at, held = T - timedelta(seconds=5), ()
        for previous, after in order + order:  # every step twice, too
            if is_newer_entitlement_set(held_at, held, T, previous):
                held_at, held = T, after
        assert held == AB


def test_what_a_summary_says_came_before():
    listed = {"object": "list", "data": [{"id": "ent_a", "feature": "feat_a", "lookup_key": "api"}], "has_more": False}
    assert previous_entitlements({"entitlements": listed}) == A
    assert previous_entitlements({"entitlements": {**listed, "data": []}}) == ()
    assert previous_entitlements({"entitlements": {**listed, "has_more": True}}) is None  # only part of it
    assert previous_entitlements(None) is None
    assert previous_entitlements({"metadata": {}}) is None
