"""State in, state out: whether a Stripe snapshot may be applied, and the row it makes.

Webhooks arrive late, twice and out of order, and the reconciler reads the API
at its own moments. Every snapshot comes with `seen_at`, Stripe's time of it:
the event's `created`, or the `Date` of the API answer. A row remembers the
newest one applied as `stripe_updated_at`. The rules, identical for webhooks,
the reconciler and the grace check:

1. Strictly newer (`seen_at > stripe_updated_at`): applied.
2. Strictly older: skipped (`next_*` returns None); a later state is already
   stored.
3. Same second: Stripe's `created` has one-second resolution and Stripe often
   emits several events for one object in one second (sign-up: `created`
   `incomplete` then `updated` `active`; an invoice's `created`, `finalized`,
   `paid`, `payment_succeeded`). Then the snapshot is applied only if it does
   not go backwards in a progress order:

   * subscriptions: `(current_period_end, status rank)` with
     incomplete < trialing < paused < active < past_due < unpaid <
     canceled = incomplete_expired. A renewal moves the period end forward;
     within one period a subscription only moves right along the ranks in
     the same second (incomplete -> active at sign-up, trialing -> paused when
     a trial ends without a payment method, paused -> active on resume,
     active -> past_due -> unpaid/canceled in dunning, anything -> canceled).
     The moves to the left (past_due -> active on recovery, unpaid -> active
     when the customer pays) happen when a customer acts, never in the second
     of the failure, so they are applied by rule 1. An unknown status ranks
     with `active`. A missing period end ranks lowest.
   * invoices: `(status rank, attempt_count)` with draft < open <
     uncollectible < paid = void; a payment failure raises `attempt_count`
     within `open`.
   * a customer's entitlement set: a summary applies only if the set it
     says came before (`previous_attributes`) is the one held, so each
     step of a chain applies after its predecessor and never again; a
     list read from the API (no predecessor known) applies.
   * equal keys: applied. An identical snapshot (`trial_will_end` carrying
     the same subscription as an `updated`; `invoice.paid` and
     `invoice.payment_succeeded`; a redelivery) then changes nothing.
     A different one is a guess (rule 5).

4. Terminal states are never left, even for a newer snapshot: a subscription
   `canceled` or `incomplete_expired` (Stripe never reactivates one; a
   reactivation is a new subscription), an invoice `paid` or `void`. This
   guards against an API read from a lagging replica and a clock skew.

5. Same second, equal subscription keys, different state (a renewal and an
   app's metadata update in one second: both carry the new period, only
   one the new metadata): nothing in the payloads orders them, so the
   snapshot is applied as rule 3 says, but the row is marked
   (`confirm_requested_at`, `is_ambiguous_tie`) and the next grace check
   asks Stripe's API for it. The mark stays through identical snapshots of
   that second (a redelivery tells nothing new) and is cleared by any
   snapshot applied under rule 1 or a greater key (a later event), and by
   any answer of Stripe's API applied (the grace check's, the
   reconciliation's), even in the same second.

With these rules, any permutation of a lifecycle's deliveries, duplicates
included, ends in the state of in-order delivery, as long as no second holds
two DIFFERENT snapshots with EQUAL keys: then the last delivered wins until
Stripe's answer to the mark of rule 5 replaces it. tests/unit/test_transitions.py
checks this property.

`access` and `owed_amount` are derived, never taken from Stripe: both are
recomputed from the new state on every application (and by `recompute` when
only the clock or an invoice changed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from subsync.access import TERMINAL_STATUSES, TIME_DEPENDENT_STATUS, Access, access_for, owed_amount
from subsync.stripe_objects import Entitlement, InvoiceSnapshot, SubscriptionSnapshot

__all__ = [
    "AUDITED_COLUMNS",
    "INVOICE_STATUS_RANK",
    "NOT_AUDITED",
    "SUBSCRIPTION_STATUS_RANK",
    "TERMINAL_INVOICE_STATUSES",
    "UNPAID_INVOICE_STATUSES",
    "InvoiceState",
    "SubscriptionState",
    "changed_columns",
    "is_ambiguous_tie",
    "is_newer_entitlement_set",
    "is_newer_invoice",
    "is_newer_subscription",
    "next_invoice_state",
    "next_subscription_state",
    "recompute",
    "snapshot_access",
    "unpaid_invoice_for_owed",
]

SUBSCRIPTION_STATUS_RANK: Mapping[str, int] = {
    "incomplete": 0,
    "trialing": 1,
    "paused": 2,
    "active": 3,
    "past_due": 4,
    "unpaid": 5,
    "canceled": 6,
    "incomplete_expired": 6,
}
_UNKNOWN_SUBSCRIPTION_RANK = SUBSCRIPTION_STATUS_RANK["active"]

INVOICE_STATUS_RANK: Mapping[str, int] = {
    "draft": 0,
    "open": 1,
    "uncollectible": 2,
    "paid": 3,
    "void": 3,
}
_UNKNOWN_INVOICE_RANK = INVOICE_STATUS_RANK["open"]
TERMINAL_INVOICE_STATUSES: frozenset[str] = frozenset({"paid", "void"})
# Invoices still owed: the ones owed_amount may be computed from.
UNPAID_INVOICE_STATUSES: frozenset[str] = frozenset({"open", "uncollectible"})

_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class SubscriptionState:
    """A `subscriptions` row (schema.sql) without `updated_at`, which is ours."""

    id: str
    customer_id: str | None
    status: str
    access: Access
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    trial_end: datetime | None
    price_id: str | None
    currency: str | None
    metadata: dict[str, Any]
    latest_invoice_id: str | None
    owed_amount: int | None
    stripe_updated_at: datetime
    cancellation_reason: str | None
    livemode: bool
    account: str | None
    # Ours, not Stripe's: when an ambiguous same-second tie asked for Stripe's confirmation (rule 5).
    confirm_requested_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SubscriptionState:
        """Build from a database row mapping (extra columns such as updated_at ignored)."""
        values = {name: row[name] for name in _SUBSCRIPTION_FIELDS}
        values["access"] = Access(values["access"])
        values["metadata"] = dict(values["metadata"] or {})
        return cls(**values)


@dataclass(frozen=True)
class InvoiceState:
    """An `invoices` row (schema.sql) without `updated_at`."""

    id: str
    subscription_id: str | None
    customer_id: str | None
    status: str
    amount_due: int
    amount_paid: int
    currency: str | None
    period_start: datetime | None
    period_end: datetime | None
    attempt_count: int
    next_payment_attempt: datetime | None
    created_at: datetime | None
    paid_at: datetime | None
    stripe_updated_at: datetime
    account: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> InvoiceState:
        """Build from a database row mapping (extra columns ignored)."""
        return cls(**{name: row[name] for name in _INVOICE_FIELDS})


_SUBSCRIPTION_FIELDS = tuple(f.name for f in dataclasses.fields(SubscriptionState))
_INVOICE_FIELDS = tuple(f.name for f in dataclasses.fields(InvoiceState))


# --- subscriptions -------------------------------------------------------------


def _subscription_key(period_end: datetime | None, status: str) -> tuple[datetime, int]:
    """Progress order used only to break same-second ties (module docstring, rule 3)."""
    rank = SUBSCRIPTION_STATUS_RANK.get(status, _UNKNOWN_SUBSCRIPTION_RANK)
    return (period_end or _EPOCH, rank)


def is_newer_subscription(current: SubscriptionState, snapshot: SubscriptionSnapshot, seen_at: datetime) -> bool:
    """Whether `snapshot`, seen by Stripe at `seen_at`, may replace `current`."""
    if current.status in TERMINAL_STATUSES and snapshot.status not in TERMINAL_STATUSES:
        return False
    if seen_at != current.stripe_updated_at:
        return seen_at > current.stripe_updated_at
    return _subscription_key(snapshot.current_period_end, snapshot.status) >= _subscription_key(
        current.current_period_end, current.status
    )


def _same_second_equal_key(current: SubscriptionState, after: SubscriptionState, seen_at: datetime) -> bool:
    return seen_at == current.stripe_updated_at and _subscription_key(
        after.current_period_end, after.status
    ) == _subscription_key(current.current_period_end, current.status)


def is_ambiguous_tie(current: SubscriptionState, after: SubscriptionState, seen_at: datetime) -> bool:
    """Whether `after`, made from a snapshot seen at `seen_at`, replaced `current` on a guess (rule 5).

    Same second, equal progress keys, and some column the rules compare
    differs: the two snapshots' order is unknown.
    """
    return _same_second_equal_key(current, after, seen_at) and bool(changed_columns(current, after)[1])


def _confirm_requested_at(
    current: SubscriptionState, after: SubscriptionState, seen_at: datetime, now: datetime
) -> datetime | None:
    """The mark of rule 5 after applying `after`: set by a guess, kept through an identical snapshot."""
    if is_ambiguous_tie(current, after, seen_at):
        return current.confirm_requested_at or now
    return current.confirm_requested_at if _same_second_equal_key(current, after, seen_at) else None


def next_subscription_state(
    current: SubscriptionState | None,
    snapshot: SubscriptionSnapshot,
    seen_at: datetime,
    *,
    now: datetime,
    grace: timedelta,
    unpaid_invoice: InvoiceState | None,
    read_from_api: bool = False,
) -> SubscriptionState | None:
    """The row after applying `snapshot`, or None when it is stale.

    The result may equal `current` (a redelivery): then nothing is written.
    When only `stripe_updated_at` moved (a newer but unchanged snapshot), the
    row must still be written, so that older snapshots arriving later are
    recognised as stale, but `changed_columns` reports nothing to audit.

    `unpaid_invoice` is the subscription's latest open/uncollectible invoice,
    if the caller has it (see `unpaid_invoice_for_owed`); it only matters when
    the new state is suspended.

    `read_from_api`: the snapshot is Stripe's answer to a read, not an
    event's, so it is Stripe's state and never a guess: it clears the mark
    of rule 5 even in the second of the snapshot it replaces.
    """
    if current is not None:
        if current.id != snapshot.id:
            raise ValueError(f"snapshot {snapshot.id} applied to row {current.id}")
        if not is_newer_subscription(current, snapshot, seen_at):
            return None
    stripe_updated_at = seen_at if current is None else max(current.stripe_updated_at, seen_at)
    access = snapshot_access(current, snapshot, now=now, grace=grace)
    owed = _owed(current, access, snapshot.ended_at, unpaid_invoice, became_suspended_at=seen_at)
    after = SubscriptionState(
        id=snapshot.id,
        customer_id=snapshot.customer_id,
        status=snapshot.status,
        access=access,
        current_period_start=snapshot.current_period_start,
        current_period_end=snapshot.current_period_end,
        cancel_at_period_end=snapshot.cancel_at_period_end,
        cancel_at=snapshot.cancel_at,
        canceled_at=snapshot.canceled_at,
        ended_at=snapshot.ended_at,
        trial_end=snapshot.trial_end,
        price_id=snapshot.price_id,
        currency=snapshot.currency,
        metadata=dict(snapshot.metadata),
        latest_invoice_id=snapshot.latest_invoice_id,
        owed_amount=owed,
        stripe_updated_at=stripe_updated_at,
        cancellation_reason=snapshot.cancellation_reason,
        livemode=snapshot.livemode,
        account=snapshot.account,
    )
    mark = None if current is None or read_from_api else _confirm_requested_at(current, after, seen_at, now)
    return after if mark is None else dataclasses.replace(after, confirm_requested_at=mark)


def snapshot_access(
    current: SubscriptionState | None, snapshot: SubscriptionSnapshot, *, now: datetime, grace: timedelta
) -> Access:
    """The access a snapshot gives when applied: `access_for`, except that a snapshot never ends a grace.

    A snapshot whose grace has run out by the time it is applied (a webhook
    Stripe delivered late, a backfill, a replay, a reconciliation of a row
    never seen) says nothing about whether the renewal happened since: it
    leaves the row in `grace`, and the next grace check asks Stripe before
    it restricts (`recompute`, with the answer). A row that grace check
    already restricted for this same period stays restricted.
    """
    access = access_for(snapshot.status, snapshot.current_period_end, snapshot.cancellation_reason, now, grace)
    if access != Access.RESTRICTED or snapshot.status != TIME_DEPENDENT_STATUS:
        return access
    restricted_already = (
        current is not None
        and current.access == Access.RESTRICTED
        and current.status == TIME_DEPENDENT_STATUS
        and current.current_period_end == snapshot.current_period_end
    )
    return Access.RESTRICTED if restricted_already else Access.GRACE


def recompute(
    state: SubscriptionState,
    *,
    now: datetime,
    grace: timedelta,
    unpaid_invoice: InvoiceState | None,
) -> SubscriptionState:
    """`access` and `owed_amount` of an unchanged Stripe state at `now`.

    For the per-minute refresh (the clock moved: full -> grace -> restricted)
    and for an invoice that arrives after its subscription turned suspended
    (the owed amount can only be computed once the invoice is known). Without
    a snapshot, the moment an `unpaid` subscription lost access is taken as the
    newest Stripe time we hold for it, `stripe_updated_at`.
    """
    access = access_for(state.status, state.current_period_end, state.cancellation_reason, now, grace)
    owed = _owed(state, access, state.ended_at, unpaid_invoice, became_suspended_at=state.stripe_updated_at)
    if access == state.access and owed == state.owed_amount:
        return state
    return dataclasses.replace(state, access=access, owed_amount=owed)


def _owed(
    current: SubscriptionState | None,
    access: Access,
    ended_at: datetime | None,
    unpaid: InvoiceState | None,
    *,
    became_suspended_at: datetime,
) -> int | None:
    """owed_amount of a new state (docs/interface.md, "Access").

    Only a suspended state owes. Access ended at `ended_at` when Stripe set it
    (canceled); an `unpaid` subscription has none, so it ended when the row
    became suspended: the Stripe time of the snapshot that made it so. When
    the row was already suspended, that moment lies in the past: the amount
    computed then is kept, or, if none could be computed then (no invoice
    yet), the row's `stripe_updated_at` is the closest moment we know.
    """
    if access != Access.SUSPENDED:
        return None
    already = current is not None and current.access == Access.SUSPENDED
    if unpaid is None or unpaid.period_start is None or unpaid.period_end is None:
        return current.owed_amount if already and current is not None else None
    if ended_at is not None:
        access_ended_at = ended_at
    elif already and current is not None:
        if current.owed_amount is not None:
            return current.owed_amount
        access_ended_at = current.stripe_updated_at
    else:
        access_ended_at = became_suspended_at
    return owed_amount(unpaid.amount_due, unpaid.period_start, unpaid.period_end, access_ended_at)


def settled_by_reactivation(state: SubscriptionState) -> SubscriptionState:
    """A suspended subscription whose debt a reactivation's first invoice paid owes nothing more.

    From then on it has no unpaid invoice for owed_amount
    (`unpaid_invoice_for_owed`, settled), so the 0 is kept whatever
    Stripe later says of it.
    """
    if state.access != Access.SUSPENDED:
        return state
    return dataclasses.replace(state, owed_amount=0)


def unpaid_invoice_for_owed(
    invoices: Iterable[InvoiceState], subscription_id: str, *, settled: bool = False
) -> InvoiceState | None:
    """The invoice owed_amount is computed from: the subscription's latest
    open or uncollectible invoice with a service period (latest period end,
    then latest creation, then the greatest id, so that the choice never
    depends on the order the rows come in). None when every invoice is paid
    or void, and when a reactivation has `settled` what the subscription
    owed: its invoices stay open in Stripe, but the customer has paid for
    the days they used with the new subscription's first invoice."""
    if settled:
        return None
    candidates = [
        inv
        for inv in invoices
        if inv.subscription_id == subscription_id
        and inv.status in UNPAID_INVOICE_STATUSES
        and inv.period_start is not None
        and inv.period_end is not None
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda inv: (inv.period_end or _EPOCH, inv.created_at or _EPOCH, inv.id))


# --- invoices ------------------------------------------------------------------


def _invoice_key(status: str, attempt_count: int) -> tuple[int, int]:
    return (INVOICE_STATUS_RANK.get(status, _UNKNOWN_INVOICE_RANK), attempt_count)


def is_newer_invoice(current: InvoiceState, snapshot: InvoiceSnapshot, seen_at: datetime) -> bool:
    """Whether an invoice snapshot seen at `seen_at` may replace `current`."""
    if current.status in TERMINAL_INVOICE_STATUSES and snapshot.status not in TERMINAL_INVOICE_STATUSES:
        return False
    if seen_at != current.stripe_updated_at:
        return seen_at > current.stripe_updated_at
    return _invoice_key(snapshot.status, snapshot.attempt_count) >= _invoice_key(current.status, current.attempt_count)


def next_invoice_state(
    current: InvoiceState | None, snapshot: InvoiceSnapshot, seen_at: datetime
) -> InvoiceState | None:
    """The invoice row after applying `snapshot`, or None when it is stale."""
    if current is not None:
        if current.id != snapshot.id:
            raise ValueError(f"snapshot {snapshot.id} applied to row {current.id}")
        if not is_newer_invoice(current, snapshot, seen_at):
            return None
    return InvoiceState(
        id=snapshot.id,
        subscription_id=snapshot.subscription_id,
        customer_id=snapshot.customer_id,
        status=snapshot.status,
        amount_due=snapshot.amount_due,
        amount_paid=snapshot.amount_paid,
        currency=snapshot.currency,
        period_start=snapshot.period_start,
        period_end=snapshot.period_end,
        attempt_count=snapshot.attempt_count,
        next_payment_attempt=snapshot.next_payment_attempt,
        created_at=snapshot.created_at,
        paid_at=snapshot.paid_at,
        stripe_updated_at=seen_at if current is None else max(current.stripe_updated_at, seen_at),
        account=snapshot.account,
    )


# --- audit ---------------------------------------------------------------------

# Bookkeeping, not a change of the subscription: a newer but identical snapshot
# moves `stripe_updated_at`, and auditing that would log every subscription on
# every nightly reconciliation; `confirm_requested_at` is our own question to
# Stripe, not Stripe's state, so no reconciliation calls it drift either.
NOT_AUDITED: frozenset[str] = frozenset({"stripe_updated_at", "confirm_requested_at"})
AUDITED_COLUMNS: tuple[str, ...] = tuple(name for name in _SUBSCRIPTION_FIELDS if name not in NOT_AUDITED)


def changed_columns(
    before: SubscriptionState | None, after: SubscriptionState
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """`subscription_changes.before/after`: JSON-ready values of the columns that differ.

    Times as ISO 8601 strings, `access` as its string. `stripe_updated_at`
    and `confirm_requested_at` are left out (see `NOT_AUDITED`): an empty
    `after` means nothing to audit, even if the row must still be written
    because one of them moved.
    `before` None (a new row) gives `(None, every audited column)`.
    """
    if before is None:
        return None, {name: _json_value(getattr(after, name)) for name in AUDITED_COLUMNS}
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for name in AUDITED_COLUMNS:
        a, b = getattr(before, name), getattr(after, name)
        if a != b:
            old[name] = _json_value(a)
            new[name] = _json_value(b)
    return old, new


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Access):
        return value.value
    if isinstance(value, dict):
        return dict(value)
    return value


def is_newer_entitlement_set(
    held_at: datetime,
    held: tuple[Entitlement, ...],
    seen_at: datetime,
    previous: tuple[Entitlement, ...] | None,
) -> bool:
    """Whether a customer's set true as of `seen_at`, preceded by `previous` (None: unknown), may replace `held`.

    Entitlements have no progress order to break a same-second tie with;
    the summary's own account of the set before it does.
    """
    if seen_at != held_at:
        return seen_at > held_at
    return previous is None or previous == held
