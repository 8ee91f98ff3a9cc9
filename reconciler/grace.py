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


def _due(pool: ConnectionPool[Any], *, now: datetime, grace: timedelta, after: str) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return subscriptions.due_for_grace_check(conn, now=now, grace=grace, after=after, limit=BATCH)


class _Deferred(Exception):
    """Stripe could not be asked now: the row stays in grace and is asked again next minute."""


def _ask_stripe(api: StripeApi, row: dict[str, Any]) -> Snapshot | None:
    """Stripe's subscription, on its own account (a connected one is unknown to the platform).

    None when Stripe does not know it (nothing confirms a renewal);
    _Deferred when Stripe could not be asked, or not on that account (a
    key without access to it is a 403, which says nothing of the renewal).
    """
    try:
        return api.retrieve_subscription(row["id"], account=row["account"])
    except stripe.InvalidRequestError as exc:
        log.warning(
            "grace_subscription_unknown_to_stripe", subscription_id=row["id"], account=row["account"], error=str(exc)
        )
        return None
    except stripe.StripeError as exc:
        log.warning("grace_check_deferred", subscription_id=row["id"], account=row["account"], error=str(exc))
        raise _Deferred from exc


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
    while rows := _due(pool, now=now, grace=grace, after=after):
        after = rows[-1]["id"]
        for row in rows:
            result.checked += 1
            snapshot = None
            if api is not None and now >= row["current_period_end"] + grace:
                result.asked_stripe += 1
                try:
                    snapshot = _ask_stripe(api, row)
                except _Deferred:
                    result.stripe_errors += 1
                    continue
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
    if result.checked:
        log.info("access_refreshed", **result.__dict__)
    return result
