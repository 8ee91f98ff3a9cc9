"""Ordering rules and state transitions (subsync/transitions.py).

The unit tests take one branch of the rules each. The property tests generate
realistic lifecycles, deliver them in any order with duplicates, and check that
the result is the state of in-order delivery.

The one case where no rule can give that: two DIFFERENT snapshots with EQUAL
progress keys in the SAME second (say two `updated` events in one second that
differ only in metadata). Nothing in the payloads tells which came first, so
the last delivered wins (test_same_second_equal_key_last_delivered_wins) and
the row is marked for the grace check to ask Stripe (rule 5). The generators therefore only put
snapshots in one second when the later one's key is strictly greater, or when
it is the same snapshot again (`trial_will_end` after `updated`,
`invoice.paid` and `invoice.payment_succeeded`), which is what Stripe does.
Likewise a move backwards in the progress order (past_due -> active on
recovery) is never put in the second of the failure: Stripe needs a
customer's action for it.
"""

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subsync.access import Access
from subsync.stripe_objects import InvoiceSnapshot, SubscriptionSnapshot
from subsync.transitions import (
    AUDITED_COLUMNS,
    INVOICE_STATUS_RANK,
    SUBSCRIPTION_STATUS_RANK,
    InvoiceState,
    SubscriptionState,
    changed_columns,
    is_ambiguous_tie,
    is_newer_invoice,
    is_newer_subscription,
    next_invoice_state,
    next_subscription_state,
    recompute,
    unpaid_invoice_for_owed,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)
MONTH = timedelta(days=30)
GRACE = timedelta(hours=72)


def sub_snap(**changes):
    base = {
        "id": "sub_1",
        "customer_id": "cus_1",
        "status": "active",
        "current_period_start": T0,
        "current_period_end": T0 + MONTH,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        "price_id": "price_1",
        "currency": "usd",
        "metadata": {},
        "latest_invoice_id": "in_1",
        "cancellation_reason": None,
        "livemode": False,
    }
    base.update(changes)
    return SubscriptionSnapshot(**base)


def inv_snap(**changes):
    base = {
        "id": "in_1",
        "subscription_id": "sub_1",
        "customer_id": "cus_1",
        "status": "open",
        "amount_due": 2999,
        "amount_paid": 0,
        "currency": "usd",
        "period_start": T0,
        "period_end": T0 + MONTH,
        "attempt_count": 0,
        "next_payment_attempt": None,
        "created_at": T0,
        "paid_at": None,
    }
    base.update(changes)
    return InvoiceSnapshot(**base)


def inv_state(**changes):
    snap = inv_snap(**{k: v for k, v in changes.items() if k != "stripe_updated_at"})
    return next_invoice_state(None, snap, changes.get("stripe_updated_at", T0))


UNPAID = inv_state(status="open", attempt_count=4)


def apply(current, snap, seen_at, *, now=T0 + DAY, unpaid_invoice=None):
    return next_subscription_state(current, snap, seen_at, now=now, grace=GRACE, unpaid_invoice=unpaid_invoice)


# --- subscription ordering, one branch each ---


def test_first_snapshot_creates_the_row():
    state = apply(None, sub_snap(), T0)
    assert state.status == "active"
    assert state.access is Access.FULL
    assert state.stripe_updated_at == T0
    assert state.owed_amount is None


def test_strictly_newer_is_applied_even_if_it_looks_backwards():
    past_due = apply(None, sub_snap(status="past_due"), T0)
    recovered = apply(past_due, sub_snap(status="active"), T0 + SECOND)
    assert recovered.status == "active"
    assert recovered.stripe_updated_at == T0 + SECOND


def test_strictly_older_is_skipped():
    current = apply(None, sub_snap(status="past_due"), T0 + HOUR)
    assert apply(current, sub_snap(status="active"), T0) is None
    assert not is_newer_subscription(current, sub_snap(status="active"), T0)


def test_same_second_forward_by_status_is_applied():
    created = apply(None, sub_snap(status="incomplete"), T0)
    assert apply(created, sub_snap(status="active"), T0).status == "active"


def test_same_second_backward_by_status_is_skipped():
    active = apply(None, sub_snap(status="active"), T0)
    assert apply(active, sub_snap(status="incomplete"), T0) is None
    past_due = apply(None, sub_snap(status="past_due"), T0)
    assert apply(past_due, sub_snap(status="active"), T0) is None


def test_same_second_later_period_wins_over_status():
    renewed = apply(None, sub_snap(current_period_start=T0 + MONTH, current_period_end=T0 + 2 * MONTH), T0)
    old_period_past_due = sub_snap(status="past_due")
    assert apply(renewed, old_period_past_due, T0) is None
    old = apply(None, old_period_past_due, T0)
    assert apply(old, sub_snap(current_period_end=T0 + 2 * MONTH), T0) is not None


def test_same_second_missing_period_ranks_lowest():
    with_period = apply(None, sub_snap(), T0)
    assert apply(with_period, sub_snap(current_period_start=None, current_period_end=None), T0) is None


def test_same_second_equal_key_identical_snapshot_changes_nothing():
    state = apply(None, sub_snap(status="trialing"), T0)
    again = apply(state, sub_snap(status="trialing"), T0)
    assert again == state
    assert changed_columns(state, again) == ({}, {})


def test_same_second_equal_key_last_delivered_wins():
    """The documented impossible case: the order is unknowable, last wins."""
    a, b = sub_snap(metadata={"plan": "a"}), sub_snap(metadata={"plan": "b"})
    assert apply(apply(None, a, T0), b, T0).metadata == {"plan": "b"}
    assert apply(apply(None, b, T0), a, T0).metadata == {"plan": "a"}


def test_same_second_equal_key_different_snapshot_is_applied_and_marked_for_confirmation():
    renewed = apply(None, sub_snap(metadata={"day": "58"}), T0, now=T0 + HOUR)
    updated = apply(renewed, sub_snap(metadata={"day": "68"}), T0, now=T0 + 2 * HOUR)
    assert updated.metadata == {"day": "68"}
    assert updated.confirm_requested_at == T0 + 2 * HOUR
    assert is_ambiguous_tie(renewed, updated, T0)
    # Another guess in that second keeps the first mark; no audit row for the mark itself.
    again = apply(updated, sub_snap(metadata={"day": "58"}), T0, now=T0 + 3 * HOUR)
    assert again.confirm_requested_at == T0 + 2 * HOUR
    assert set(changed_columns(updated, again)[1]) == {"metadata"}


def test_same_second_identical_snapshot_sets_no_mark_and_keeps_one():
    state = apply(None, sub_snap(metadata={"day": "58"}), T0)
    again = apply(state, sub_snap(metadata={"day": "58"}), T0)
    assert again.confirm_requested_at is None
    assert not is_ambiguous_tie(state, again, T0)
    marked = dataclasses.replace(state, confirm_requested_at=T0 + HOUR)
    assert apply(marked, sub_snap(metadata={"day": "58"}), T0) == marked  # a redelivery tells nothing


def test_strictly_newer_snapshot_is_no_tie_and_clears_the_mark():
    marked = dataclasses.replace(apply(None, sub_snap(metadata={"day": "58"}), T0), confirm_requested_at=T0)
    newer = apply(marked, sub_snap(metadata={"day": "68"}), T0 + SECOND)
    assert newer.confirm_requested_at is None
    assert not is_ambiguous_tie(marked, newer, T0 + SECOND)
    assert changed_columns(marked, newer) == ({"metadata": {"day": "58"}}, {"metadata": {"day": "68"}})


def test_same_second_greater_key_is_no_tie_and_clears_the_mark():
    marked = dataclasses.replace(apply(None, sub_snap(metadata={"day": "58"}), T0), confirm_requested_at=T0)
    renewed = apply(marked, sub_snap(current_period_end=T0 + 2 * MONTH, metadata={"day": "68"}), T0)
    assert renewed.confirm_requested_at is None
    assert not is_ambiguous_tie(marked, renewed, T0)
    dunned = apply(marked, sub_snap(status="past_due"), T0)
    assert dunned.confirm_requested_at is None


def test_an_answer_of_stripes_api_in_the_same_second_is_no_guess_and_clears_the_mark():
    marked = dataclasses.replace(apply(None, sub_snap(metadata={"day": "58"}), T0), confirm_requested_at=T0)
    answer = next_subscription_state(
        marked, sub_snap(metadata={"day": "68"}), T0, now=T0 + DAY, grace=GRACE, unpaid_invoice=None, read_from_api=True
    )
    assert answer is not None
    assert answer.metadata == {"day": "68"}
    assert answer.confirm_requested_at is None


def test_unknown_status_ranks_with_active():
    state = apply(None, sub_snap(status="active"), T0)
    assert apply(state, sub_snap(status="brand_new_status"), T0).access is Access.NONE
    state = apply(None, sub_snap(status="past_due"), T0)
    assert apply(state, sub_snap(status="brand_new_status"), T0) is None


@pytest.mark.parametrize("terminal", ["canceled", "incomplete_expired"])
def test_terminal_is_never_left_even_for_a_newer_snapshot(terminal):
    state = apply(None, sub_snap(status=terminal, ended_at=T0), T0)
    assert apply(state, sub_snap(status="active"), T0 + DAY) is None
    assert not is_newer_subscription(state, sub_snap(status="active"), T0 + DAY)


def test_terminal_to_terminal_newer_is_applied():
    state = apply(None, sub_snap(status="canceled", ended_at=T0), T0)
    later = apply(state, sub_snap(status="canceled", ended_at=T0, metadata={"note": "x"}), T0 + DAY)
    assert later.metadata == {"note": "x"}
    assert apply(state, sub_snap(status="canceled", ended_at=T0, metadata={"n": 1}), T0 - SECOND) is None


def test_wrong_row_is_refused():
    state = apply(None, sub_snap(), T0)
    with pytest.raises(ValueError, match="sub_2"):
        apply(state, sub_snap(id="sub_2"), T0 + SECOND)


def test_newer_identical_snapshot_moves_only_stripe_updated_at():
    state = apply(None, sub_snap(), T0)
    later = apply(state, sub_snap(), T0 + HOUR)
    assert later != state  # must be written, so older deliveries stay stale...
    assert later.stripe_updated_at == T0 + HOUR
    assert changed_columns(state, later) == ({}, {})  # ...but nothing to audit


# --- access and owed_amount on transitions ---


def test_access_is_recomputed_from_the_new_state_at_now():
    state = apply(None, sub_snap(), T0, now=T0 + MONTH + HOUR)
    assert state.access is Access.GRACE


def test_unpaid_owes_from_the_seen_at_of_the_suspending_snapshot():
    past_due = apply(None, sub_snap(status="past_due"), T0 + DAY)
    unpaid = apply(past_due, sub_snap(status="unpaid"), T0 + 15 * DAY, unpaid_invoice=UNPAID)
    assert unpaid.access is Access.SUSPENDED
    assert unpaid.owed_amount == 1500  # 2999 * 15/30 = 1499.5, half up


def test_canceled_for_payment_failure_owes_until_ended_at():
    snap = sub_snap(status="canceled", cancellation_reason="payment_failed", ended_at=T0 + 10 * DAY)
    state = apply(None, snap, T0 + 20 * DAY, unpaid_invoice=UNPAID)
    assert state.access is Access.SUSPENDED
    assert state.owed_amount == 1000  # 2999 / 3 = 999.67


def test_suspended_without_invoice_owes_nothing_known_yet():
    assert apply(None, sub_snap(status="unpaid"), T0 + DAY).owed_amount is None


def test_suspended_keeps_its_owed_amount_without_invoice():
    unpaid = apply(None, sub_snap(status="unpaid"), T0 + 15 * DAY, unpaid_invoice=UNPAID)
    later = apply(unpaid, sub_snap(status="unpaid", metadata={"x": "1"}), T0 + 20 * DAY)
    assert later.owed_amount == 1500


def test_still_unpaid_keeps_the_amount_of_when_access_ended():
    unpaid = apply(None, sub_snap(status="unpaid"), T0 + 15 * DAY, unpaid_invoice=UNPAID)
    later = apply(unpaid, sub_snap(status="unpaid", metadata={"x": "1"}), T0 + 20 * DAY, unpaid_invoice=UNPAID)
    assert later.owed_amount == 1500


def test_cancel_after_unpaid_uses_ended_at():
    unpaid = apply(None, sub_snap(status="unpaid"), T0 + 15 * DAY, unpaid_invoice=UNPAID)
    snap = sub_snap(status="canceled", cancellation_reason="payment_failed", ended_at=T0 + 21 * DAY)
    assert apply(unpaid, snap, T0 + 21 * DAY, unpaid_invoice=UNPAID).owed_amount == 2099  # 2099.3


def test_recovery_clears_the_owed_amount():
    unpaid = apply(None, sub_snap(status="unpaid"), T0 + 15 * DAY, unpaid_invoice=UNPAID)
    assert apply(unpaid, sub_snap(status="active"), T0 + 16 * DAY).owed_amount is None


def test_customer_cancellation_owes_nothing():
    snap = sub_snap(status="canceled", cancellation_reason="cancellation_requested", ended_at=T0 + 10 * DAY)
    state = apply(None, snap, T0 + 10 * DAY, unpaid_invoice=UNPAID)
    assert (state.access, state.owed_amount) == (Access.NONE, None)


# --- recompute ---


def test_recompute_follows_the_clock():
    state = apply(None, sub_snap(), T0, now=T0)
    assert recompute(state, now=T0 + MONTH - SECOND, grace=GRACE, unpaid_invoice=None) is state
    grace = recompute(state, now=T0 + MONTH, grace=GRACE, unpaid_invoice=None)
    assert grace.access is Access.GRACE
    restricted = recompute(grace, now=T0 + MONTH + GRACE, grace=GRACE, unpaid_invoice=None)
    assert restricted.access is Access.RESTRICTED
    assert dataclasses.replace(restricted, access=Access.FULL) == state


def test_recompute_when_the_invoice_arrives_after_the_subscription():
    unpaid = apply(None, sub_snap(status="unpaid"), T0 + 15 * DAY)
    assert unpaid.owed_amount is None
    with_invoice = recompute(unpaid, now=T0 + 16 * DAY, grace=GRACE, unpaid_invoice=UNPAID)
    assert with_invoice.owed_amount == 1500  # ended at stripe_updated_at
    again = recompute(with_invoice, now=T0 + 40 * DAY, grace=GRACE, unpaid_invoice=UNPAID)
    assert again is with_invoice


def test_recompute_clears_owed_amount_when_no_longer_suspended():
    state = dataclasses.replace(apply(None, sub_snap(), T0), owed_amount=123)
    assert recompute(state, now=T0, grace=GRACE, unpaid_invoice=None).owed_amount is None


# --- helpers ---


def test_unpaid_invoice_for_owed_picks_the_latest_unpaid():
    old = inv_state(id="in_old", status="uncollectible")
    new = inv_state(id="in_new", period_start=T0 + MONTH, period_end=T0 + 2 * MONTH)
    paid = inv_state(id="in_paid", status="paid", period_start=T0 + 2 * MONTH, period_end=T0 + 3 * MONTH)
    other = inv_state(id="in_other", subscription_id="sub_2", period_end=T0 + 9 * MONTH)
    assert unpaid_invoice_for_owed([old, new, paid, other], "sub_1") is new
    assert unpaid_invoice_for_owed([paid], "sub_1") is None


def test_changed_columns_new_row_has_every_audited_column_json_ready():
    after = apply(None, sub_snap(metadata={"a": "1"}), T0)
    before, cols = changed_columns(None, after)
    assert before is None
    assert set(cols) == set(AUDITED_COLUMNS)
    assert "stripe_updated_at" not in cols
    assert cols["access"] == "full"
    assert cols["current_period_end"] == (T0 + MONTH).isoformat()
    json.dumps(cols)


def test_changed_columns_only_differences():
    before = apply(None, sub_snap(), T0)
    after = apply(before, sub_snap(status="past_due"), T0 + HOUR)
    assert changed_columns(before, after) == (
        {"status": "active", "access": "full"},
        {"status": "past_due", "access": "restricted"},
    )


def test_from_row_round_trip():
    state = apply(None, sub_snap(), T0)
    row = {**dataclasses.asdict(state), "access": "full", "updated_at": T0}
    assert SubscriptionState.from_row(row) == state
    inv = inv_state()
    assert InvoiceState.from_row({**dataclasses.asdict(inv), "updated_at": T0}) == inv


# --- invoice ordering ---


def test_invoice_first_and_newer_and_older():
    draft = next_invoice_state(None, inv_snap(status="draft"), T0)
    assert draft.stripe_updated_at == T0
    open_ = next_invoice_state(draft, inv_snap(status="open"), T0 + HOUR)
    assert open_.status == "open"
    assert next_invoice_state(open_, inv_snap(status="draft"), T0) is None


def test_invoice_same_second_by_status_rank():
    draft = next_invoice_state(None, inv_snap(status="draft"), T0)
    paid = next_invoice_state(draft, inv_snap(status="paid", amount_paid=2999), T0)
    assert paid.status == "paid"
    opened = next_invoice_state(None, inv_snap(status="open"), T0)
    assert next_invoice_state(opened, inv_snap(status="draft"), T0) is None


def test_invoice_same_second_by_attempt_count():
    first = next_invoice_state(None, inv_snap(attempt_count=1), T0)
    assert next_invoice_state(first, inv_snap(attempt_count=2), T0).attempt_count == 2
    second = next_invoice_state(None, inv_snap(attempt_count=2), T0)
    assert next_invoice_state(second, inv_snap(attempt_count=1), T0) is None
    assert not is_newer_invoice(second, inv_snap(attempt_count=1), T0)


def test_invoice_same_second_identical_changes_nothing():
    paid = next_invoice_state(None, inv_snap(status="paid"), T0)
    assert next_invoice_state(paid, inv_snap(status="paid"), T0) == paid


@pytest.mark.parametrize("terminal", ["paid", "void"])
def test_invoice_terminal_is_never_left(terminal):
    state = next_invoice_state(None, inv_snap(status=terminal), T0)
    assert next_invoice_state(state, inv_snap(status="open", attempt_count=3), T0 + DAY) is None


def test_invoice_uncollectible_can_still_be_paid():
    state = next_invoice_state(None, inv_snap(status="uncollectible"), T0)
    assert next_invoice_state(state, inv_snap(status="paid"), T0 + DAY).status == "paid"


def test_invoice_wrong_row_is_refused():
    with pytest.raises(ValueError, match="in_2"):
        next_invoice_state(inv_state(), inv_snap(id="in_2"), T0)


# --- property: any delivery order ends where in-order delivery ends ---


def _sub_key(snap):
    return (snap.current_period_end or datetime.min.replace(tzinfo=UTC), SUBSCRIPTION_STATUS_RANK[snap.status])


def _inv_key(snap):
    return (INVOICE_STATUS_RANK[snap.status], snap.attempt_count)


class _Recorder:
    """Builds a lifecycle: each `emit` is one snapshot Stripe sends, at a strictly later time."""

    def __init__(self, factory, **start):
        self.factory = factory
        self.fields = dict(start)
        self.events = []
        self.t = T0

    def emit(self, after=SECOND, **changes):
        self.t += max(after, SECOND)
        self.fields.update(changes)
        self.events.append((self.t, self.factory(**self.fields)))
        return self.t


def _sign_up(draw, r, new_period, jitter):
    """Immediate, incomplete (which may expire) or trial (which may pause); True when it ended there."""
    start = draw(st.sampled_from(["immediate", "incomplete", "trial"]))

    if start == "immediate":
        r.emit(SECOND)
    elif start == "incomplete":
        r.emit(SECOND, status="incomplete")
        if draw(st.booleans()):
            at = r.t + 23 * HOUR
            r.emit(at - r.t, status="incomplete_expired", ended_at=at)
            return True
        r.emit(draw(jitter), status="active")
    else:
        trial_end = r.t + 14 * DAY
        r.emit(SECOND, status="trialing", current_period_end=trial_end, trial_end=trial_end)
        if draw(st.booleans()):  # trial_will_end: the same snapshot again, 3 days before
            r.emit(trial_end - 3 * DAY - r.t)
        if draw(st.booleans()):  # trial ended without a payment method
            r.emit(trial_end - r.t, status="paused")
            if not draw(st.booleans()):
                return True
            resumed = r.t + draw(st.integers(1, 10)) * DAY
            new_period(resumed)
        else:
            new_period(trial_end)
    return False


@st.composite
def subscription_lifecycles(draw):
    """Sign-up (immediate, incomplete, trial), renewals, failures that recover
    or end in dunning (unpaid / canceled), cancellation at period end or at once."""
    r = _Recorder(sub_snap, status="active", current_period_start=T0, current_period_end=T0 + MONTH)
    jitter = st.integers(1, 3600).map(lambda s: timedelta(seconds=s))

    def new_period(start_at, **changes):
        r.emit(
            start_at - r.t,
            status="active",
            current_period_start=start_at,
            current_period_end=start_at + MONTH,
            latest_invoice_id=f"in_{len(r.events)}",
            **changes,
        )

    if _sign_up(draw, r, new_period, jitter):
        return r.events

    for _ in range(draw(st.integers(0, 3))):
        period_end = r.fields["current_period_end"]
        new_period(period_end + draw(st.integers(0, 5)) * SECOND)
        outcome = draw(st.sampled_from(["paid", "recover", "unpaid", "unpaid_recover", "dunning_cancel"]))
        if outcome == "paid":
            continue
        r.emit(HOUR + draw(jitter), status="past_due")
        if outcome == "recover":
            r.emit(draw(st.integers(1, 5)) * DAY, status="active")
            continue
        if outcome == "dunning_cancel":
            at = r.t + 10 * DAY
            r.emit(at - r.t, status="canceled", cancellation_reason="payment_failed", canceled_at=at, ended_at=at)
            return r.events
        r.emit(10 * DAY, status="unpaid")
        if outcome == "unpaid_recover":
            r.emit(draw(st.integers(1, 20)) * DAY, status="active")
            continue
        if draw(st.booleans()):  # the merchant cancels it later
            at = r.t + 5 * DAY
            r.emit(
                at - r.t, status="canceled", cancellation_reason="cancellation_requested", canceled_at=at, ended_at=at
            )
        return r.events

    ending = draw(st.sampled_from(["none", "at_period_end", "undo_at_period_end", "immediately"]))
    if ending in ("at_period_end", "undo_at_period_end"):
        period_end = r.fields["current_period_end"]
        asked = r.t + draw(st.integers(1, 20)) * DAY
        r.emit(asked - r.t, cancel_at_period_end=True, cancel_at=period_end, canceled_at=asked)
        if ending == "undo_at_period_end":
            r.emit(DAY, cancel_at_period_end=False, cancel_at=None, canceled_at=None)
        else:
            r.emit(
                max(period_end - r.t, SECOND),
                status="canceled",
                cancellation_reason="cancellation_requested",
                ended_at=period_end,
            )
    elif ending == "immediately":
        at = r.t + draw(st.integers(1, 20)) * DAY
        r.emit(at - r.t, status="canceled", cancellation_reason="cancellation_requested", canceled_at=at, ended_at=at)
    return r.events


@st.composite
def invoice_lifecycles(draw):
    """Draft, finalized, then paid (with its twin payment_succeeded), failed
    attempts ending paid, uncollectible (maybe paid later) or void."""
    r = _Recorder(inv_snap, status="draft", amount_due=2999, attempt_count=0)
    jitter = st.integers(1, 3600).map(lambda s: timedelta(seconds=s))
    r.emit(SECOND)
    r.emit(HOUR, status="open", next_payment_attempt=r.t + HOUR)

    def paid():
        r.emit(draw(jitter), status="paid", amount_paid=2999, paid_at=r.t + SECOND, next_payment_attempt=None)
        r.emit(draw(st.integers(0, 2)) * SECOND)  # invoice.payment_succeeded: the same invoice

    for attempt in range(1, draw(st.integers(0, 4)) + 1):
        r.emit(draw(st.integers(1, 3)) * DAY, attempt_count=attempt, next_payment_attempt=r.t + 3 * DAY)
    end = draw(st.sampled_from(["paid", "uncollectible", "uncollectible_paid", "void"]))
    if end == "paid":
        paid()
    elif end == "void":
        r.emit(draw(jitter), status="void", next_payment_attempt=None)
    else:
        r.emit(draw(jitter), status="uncollectible", next_payment_attempt=None)
        if end == "uncollectible_paid":
            paid()
    return r.events


def _merge_same_seconds(draw, events, key):
    """Put some consecutive snapshots into one second, where Stripe could: the
    later one strictly ahead in the progress order, or the very same snapshot."""
    merged = [events[0]]
    for seen_at, snap in events[1:]:
        prev_seen, prev = merged[-1]
        same_second = (key(snap) > key(prev) or snap == prev) and draw(st.booleans())
        merged.append((prev_seen if same_second else seen_at, snap))
    return merged


def _deliveries(draw, events):
    """Any order, with some deliveries repeated."""
    extra = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    return draw(st.permutations(events + extra))


def _fold_subscriptions(deliveries, now, unpaid_invoice, *, strict=False):
    state = None
    for seen_at, snap in deliveries:
        new = next_subscription_state(state, snap, seen_at, now=now, grace=GRACE, unpaid_invoice=unpaid_invoice)
        assert not (strict and new is None), f"in-order delivery skipped {snap.status} at {seen_at}"
        state = new if new is not None else state
    return state


def _fold_invoices(deliveries, *, strict=False):
    state = None
    for seen_at, snap in deliveries:
        new = next_invoice_state(state, snap, seen_at)
        assert not (strict and new is None), f"in-order delivery skipped {snap.status} at {seen_at}"
        state = new if new is not None else state
    return state


NOWS = st.integers(0, 400).map(lambda d: T0 + d * DAY + HOUR)
OWED_INVOICE = st.sampled_from([None, UNPAID])
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_subscriptions(events, deliveries, now, unpaid_invoice):
    in_order = _fold_subscriptions(events, now, unpaid_invoice, strict=True)
    last_seen, last = events[-1]
    assert in_order == next_subscription_state(
        None, last, last_seen, now=now, grace=GRACE, unpaid_invoice=unpaid_invoice
    )
    assert _fold_subscriptions(deliveries, now, unpaid_invoice) == in_order


@PROPERTY
@given(data=st.data(), now=NOWS, unpaid_invoice=OWED_INVOICE)
def test_subscription_any_order_distinct_seconds(data, now, unpaid_invoice):
    events = data.draw(subscription_lifecycles())
    _check_subscriptions(events, _deliveries(data.draw, events), now, unpaid_invoice)


@PROPERTY
@given(data=st.data(), now=NOWS, unpaid_invoice=OWED_INVOICE)
def test_subscription_any_order_with_same_second_groups(data, now, unpaid_invoice):
    events = _merge_same_seconds(data.draw, data.draw(subscription_lifecycles()), _sub_key)
    _check_subscriptions(events, _deliveries(data.draw, events), now, unpaid_invoice)


@PROPERTY
@given(data=st.data())
def test_invoice_any_order_distinct_seconds(data):
    events = data.draw(invoice_lifecycles())
    in_order = _fold_invoices(events, strict=True)
    assert _fold_invoices(_deliveries(data.draw, events)) == in_order


@PROPERTY
@given(data=st.data())
def test_invoice_any_order_with_same_second_groups(data):
    events = _merge_same_seconds(data.draw, data.draw(invoice_lifecycles()), _inv_key)
    in_order = _fold_invoices(events, strict=True)
    assert in_order.stripe_updated_at == events[-1][0]
    assert _fold_invoices(_deliveries(data.draw, events)) == in_order


def test_same_second_sign_up_in_reverse_still_ends_active():
    """The realistic same-second group: created (incomplete) and updated (active)."""
    events = [(T0, sub_snap(status="incomplete")), (T0, sub_snap(status="active"))]
    assert _fold_subscriptions(reversed(events), T0, None).status == "active"
