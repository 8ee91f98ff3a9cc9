"""What a subscription's Stripe state means for the application: one mapping.

`access_for` is the only place that turns Stripe's status into `access`; the
webhook worker, the reconciler and the per-minute refresh all call it, so they
can never disagree about what a state means.

The table (docs/interface.md, "Access"):

    trialing                                          full
    active, now < current_period_end (or no end)      full
    active, end <= now < end + grace                  grace
    active, now >= end + grace                        restricted
    past_due                                          restricted
    unpaid                                            suspended
    canceled / incomplete_expired, reason
        "payment_failed"                              suspended
    incomplete, paused, other canceled, unknown       none

Boundary: Stripe's periods are half-open, `[current_period_start,
current_period_end)`: the next period starts at exactly the previous end. So at
`now == current_period_end` the paid period is over and, until the renewal is
confirmed, the subscription is in grace; likewise at `now == end + grace` grace
is over and access is restricted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction

__all__ = [
    "ACCESS_RANKING",
    "GRACE_ACCESS",
    "PAYMENT_FAILED_REASON",
    "TERMINAL_STATUSES",
    "Access",
    "access_for",
    "access_ranking_sql",
    "best_access",
    "owed_amount",
    "time_dependent",
    "time_dependent_sql",
]


class Access(StrEnum):
    """The values of `subscriptions.access` (the schema's CHECK constraint)."""

    FULL = "full"
    GRACE = "grace"
    RESTRICTED = "restricted"
    SUSPENDED = "suspended"
    NONE = "none"


# Best first: a customer's access is the best of its subscriptions'
# (`best_access`); the view `customer_access` ranks with
# `access_ranking_sql()`, and a test holds schema.sql to it.
ACCESS_RANKING: tuple[Access, ...] = (Access.FULL, Access.GRACE, Access.RESTRICTED, Access.SUSPENDED, Access.NONE)


def best_access(accesses: Iterable[Access]) -> Access:
    """The best of `accesses` in ACCESS_RANKING; `none` for no subscription at all."""
    return min(accesses, key=ACCESS_RANKING.index, default=Access.NONE)


def access_ranking_sql() -> str:
    """ACCESS_RANKING as a SQL text array: `array_position` in it is the rank, best first."""
    return "ARRAY[" + ", ".join(f"'{a.value}'" for a in ACCESS_RANKING) + "]"


# Statuses Stripe never leaves: a canceled subscription is never reactivated
# (a "reactivation" is a new subscription with a new id).
TERMINAL_STATUSES: frozenset[str] = frozenset({"canceled", "incomplete_expired"})
# cancellation_details.reason Stripe sets when dunning cancels a subscription.
PAYMENT_FAILED_REASON = "payment_failed"
# The access values the clock alone can change for an `active` row
# (full -> grace -> restricted); the schema's partial index is on exactly these.
GRACE_ACCESS: frozenset[Access] = frozenset({Access.FULL, Access.GRACE})


def access_for(
    status: str,
    current_period_end: datetime | None,
    cancellation_reason: str | None,
    now: datetime,
    grace: timedelta,
) -> Access:
    """Return the access a subscription in `status` gives at `now`.

    `active` depends on time: past `current_period_end` Stripe has not (yet)
    told us about the renewal, which usually means a lost or late webhook, so
    the customer keeps working for `grace` before being restricted. An
    `active` subscription without a period end (never seen in practice) is
    taken at its word: full.
    """
    if status == "trialing":
        return Access.FULL
    if status == "active":
        if current_period_end is None or now < current_period_end:
            return Access.FULL
        if now < current_period_end + grace:
            return Access.GRACE
        return Access.RESTRICTED
    if status == "past_due":
        return Access.RESTRICTED
    if status == "unpaid":
        return Access.SUSPENDED
    if status in TERMINAL_STATUSES and cancellation_reason == PAYMENT_FAILED_REASON:
        return Access.SUSPENDED
    # incomplete (first payment not made), paused (trial ended without a
    # payment method), canceled for any other reason, and statuses Stripe may
    # add in the future: no access rather than a guess that gives some.
    return Access.NONE


# The only status whose access moves with the clock.
TIME_DEPENDENT_STATUS = "active"


def time_dependent(status: str, access: Access) -> bool:
    """True for the rows whose access the clock alone can change.

    Only `active` rows still in `full` or `grace` move without an event
    (full -> grace -> restricted). `time_dependent_sql` is the same predicate
    for the grace check's query; tests hold it to this one on every status
    and access, and the partial index `subscriptions_time_dependent_idx` in
    schema.sql to it.
    """
    return status == TIME_DEPENDENT_STATUS and access in GRACE_ACCESS


def time_dependent_sql() -> str:
    """`time_dependent` as a SQL predicate on the `subscriptions` columns `status` and `access`."""
    values = ", ".join(f"'{a.value}'" for a in sorted(GRACE_ACCESS, key=list(Access).index))
    return f"status = '{TIME_DEPENDENT_STATUS}' AND access IN ({values})"


def owed_amount(
    amount_due: int,
    period_start: datetime,
    period_end: datetime,
    access_ended_at: datetime,
) -> int:
    """Price of the part of an unpaid period the customer actually used.

    `amount_due` times the elapsed share of `[period_start, period_end)` at
    `access_ended_at`, the share clamped to [0, 1] (access that ended before the
    period started owes nothing; after its end, the whole invoice), rounded
    half up. Exact arithmetic on integer microseconds with `Fraction`: a float
    would turn 2999 * 1/2 into 1499.4999... on some inputs and give a customer
    a different bill than the one we can explain. Example: a 30-day period of
    2999 ended after 15 days owes 1499.5 -> 1500.

    A zero-length (or inverted) period has no share to speak of: it is owed
    entirely once access ended at or after its end, else nothing.
    """
    total = _micros(period_end - period_start)
    if total <= 0:
        return amount_due if access_ended_at >= period_end else 0
    elapsed = min(max(_micros(access_ended_at - period_start), 0), total)
    exact = Fraction(amount_due * elapsed, total)
    # Half up: floor(x + 1/2). Fraction's floor division is exact.
    return int((exact + Fraction(1, 2)) // 1)


def _micros(delta: timedelta) -> int:
    """A timedelta as an exact integer number of microseconds."""
    return delta // timedelta(microseconds=1)
