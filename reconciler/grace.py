"""Time-dependent access: full -> grace -> (repaired from Stripe | restricted).

Run every minute by the scheduler and at once by `subscriptions refresh`.
Only rows whose access time alone can change are read, through the partial
index `subscriptions_time_dependent_idx` (active, access full or grace), so
the cost follows the number of renewals due, not the size of the table.

When a grace period runs out we first ask Stripe for the subscription: a
renewal whose webhook was lost is repaired there and then (audit source
'grace'), not at the next nightly reconciliation. If Stripe cannot be asked
(an error, a rate limit that does not clear), the row stays in grace and is
tried again next minute: a Stripe outage must not lock paying customers out.
Without STRIPE_API_KEY there is no one to ask, and grace ends in restricted.

A connected account Stripe refuses us (403: it revoked our access, or our
key does not know it) says nothing of the renewal either, but unlike an
outage it may never end: its rows are deferred for one more grace period
then grace ends in restricted as without a key.
Within one check such an account is asked once and logged once.

The same check confirms rows applied on a same-second guess
(`confirm_requested_at`, subsync.transitions rule 5): Stripe is asked for
each and its answer applied the same way (audit source 'grace'), which
clears the mark. If Stripe cannot be asked, or refuses the account, the
mark stays and the row is asked again next minute; without STRIPE_API_KEY
they are left to the nightly reconciliation, whose apply clears the mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from psycopg_pool import ConnectionPool

from subsync import logs
from subsync.store import subscriptions
from subsync.stripe_api import Snapshot, StripeApi
from subsync.stripe_objects import parse_subscription

log = logs.get_logger(__name__)

BATCH = 1000


@dataclass
class RefreshResult:
    checked: int = 0
    changed: int = 0
    asked_stripe: int = 0
    repaired_from_stripe: int = 0
    stripe_errors: int = 0
    confirmed: int = 0  # marked rows whose mark Stripe's answer cleared


def _due(pool: ConnectionPool[Any], *, now: datetime, grace: timedelta, after: str) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return subscriptions.due_for_grace_check(conn, now=now, grace=grace, after=after, limit=BATCH)


def _to_confirm(pool: ConnectionPool[Any], *, after: str) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return subscriptions.due_for_confirmation(conn, after=after, limit=BATCH)


class _Deferred(Exception):
    """Stripe could not be asked now: the row stays in grace and is asked again next minute."""


class _Refused(Exception):
    """Stripe refuses us the row's connected account (403): revoked, or unknown to our key."""


def _ask_stripe(api: StripeApi, row: dict[str, Any]) -> Snapshot | None:
    """Stripe's subscription, on its own account (a connected one is unknown to the platform).

    None when Stripe does not know it (nothing confirms a renewal);
    _Refused when Stripe refuses us its connected account; _Deferred when
    Stripe could not be asked (the platform's own 403 is a key without the
    permission, which an operator fixes).
    """
    try:
        return api.retrieve_subscription(row["id"], account=row["account"])
    except stripe.InvalidRequestError as exc:
        log.warning(
            "grace_subscription_unknown_to_stripe", subscription_id=row["id"], account=row["account"], error=str(exc)
        )
        return None
    except stripe.PermissionError as exc:
        if row["account"] is None:
            log.warning("grace_check_deferred", subscription_id=row["id"], account=None, error=str(exc))
            raise _Deferred from exc
        raise _Refused from exc
    except stripe.StripeError as exc:
        log.warning("grace_check_deferred", subscription_id=row["id"], account=row["account"], error=str(exc))
        raise _Deferred from exc


def _apply(
    pool: ConnectionPool[Any],
    row: dict[str, Any],
    snapshot: Snapshot | None,
    *,
    now: datetime,
    grace: timedelta,
    source_id: str,
    result: RefreshResult,
) -> subscriptions.Applied | None:
    """Apply Stripe's answer, if any, then the clock; returns what the answer did."""
    applied = None
    with pool.connection() as conn, conn.transaction():
        if snapshot is not None:
            applied = subscriptions.apply_subscription_snapshot(
                conn,
                parse_subscription(snapshot.data, account=row["account"]),
                snapshot.seen_at,
                now=now,
                grace=grace,
                source="grace",
                source_id=source_id,
            )
            result.repaired_from_stripe += int(applied.changed)
            result.changed += int(applied.changed)
        recomputed = subscriptions.recompute_subscription(
            conn, row["id"], now=now, grace=grace, source="grace", source_id=source_id
        )
        result.changed += int(recomputed.changed)
    return applied


def refresh(
    pool: ConnectionPool[Any],
    *,
    grace: timedelta,
    api: StripeApi | None,
    now: datetime | None = None,
) -> RefreshResult:
    now = now or datetime.now(UTC)
    result = RefreshResult()
    source_id = f"refresh:{now.isoformat(timespec='seconds')}"
    after = ""
    refused: set[str] = set()  # connected accounts Stripe refused us in this check: asked once
    while rows := _due(pool, now=now, grace=grace, after=after):
        after = rows[-1]["id"]
        for row in rows:
            result.checked += 1
            snapshot = None
            ended = row["current_period_end"] + grace
            if api is not None and now >= ended:
                if row["account"] not in refused:
                    try:
                        snapshot = _ask(api, row, result, refused)
                    except _Deferred:
                        continue
                # Refused: one more grace period in case the account comes back, then restricted.
                if row["account"] in refused and now < ended + grace:
                    result.stripe_errors += 1
                    continue
            _apply(pool, row, snapshot, now=now, grace=grace, source_id=source_id, result=result)
    if api is not None:
        _confirm(pool, api, now=now, grace=grace, source_id=source_id, result=result, refused=refused)
    if result.checked or result.asked_stripe:
        log.info("access_refreshed", **result.__dict__)
    return result


def _ask(api: StripeApi, row: dict[str, Any], result: RefreshResult, refused: set[str]) -> Snapshot | None:
    """`_ask_stripe`, counted; a refused account is noted (and logged) once per check."""
    result.asked_stripe += 1
    try:
        return _ask_stripe(api, row)
    except _Deferred:
        result.stripe_errors += 1
        raise
    except _Refused:
        refused.add(row["account"])
        log.warning("grace_account_refused", account=row["account"], effect="restricted a grace period later")
        return None


def _confirm(
    pool: ConnectionPool[Any],
    api: StripeApi,
    *,
    now: datetime,
    grace: timedelta,
    source_id: str,
    result: RefreshResult,
    refused: set[str],
) -> None:
    """Ask Stripe for every row marked on a same-second guess and apply its answer."""
    after = ""
    while rows := _to_confirm(pool, after=after):
        after = rows[-1]["id"]
        for row in rows:
            if row["account"] in refused:
                result.stripe_errors += 1
                continue
            try:
                snapshot = _ask(api, row, result, refused)
            except _Deferred:
                continue
            if snapshot is None:  # refused, or unknown to Stripe: nothing confirms either state
                result.stripe_errors += int(row["account"] in refused)
                continue
            applied = _apply(pool, row, snapshot, now=now, grace=grace, source_id=source_id, result=result)
            if applied is not None and applied.state is not None and applied.state.confirm_requested_at is None:
                result.confirmed += 1
