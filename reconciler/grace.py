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

from reconciler.stripe_api import StripeApi
from subsync import logs, store
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


def due(pool: ConnectionPool[Any], *, now: datetime, grace: timedelta, after: str = "") -> list[dict[str, Any]]:
    """Rows whose access must move now: full past period end, or grace run out."""
    with pool.connection() as conn:
        return conn.execute(
            """
            SELECT id, access, current_period_end FROM subscriptions
             WHERE status = 'active' AND access IN ('full', 'grace')
               AND current_period_end <= %(now)s
               AND (access = 'full' OR current_period_end <= %(now)s - %(grace)s)
               AND id > %(after)s
             ORDER BY id
             LIMIT %(batch)s
            """,
            {"now": now, "grace": grace, "after": after, "batch": BATCH},
        ).fetchall()


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
    while rows := due(pool, now=now, grace=grace, after=after):
        after = rows[-1]["id"]
        for row in rows:
            result.checked += 1
            grace_over = now >= row["current_period_end"] + grace
            snapshot = None
            if grace_over and api is not None:
                result.asked_stripe += 1
                try:
                    snapshot = api.retrieve_subscription(row["id"])
                except stripe.InvalidRequestError as exc:
                    # Stripe does not know it: nothing confirms a renewal.
                    log.warning("grace_subscription_unknown_to_stripe", subscription_id=row["id"], error=str(exc))
                except stripe.StripeError as exc:
                    result.stripe_errors += 1
                    log.warning("grace_check_deferred", subscription_id=row["id"], error=str(exc))
                    continue
            with pool.connection() as conn, conn.transaction():
                if snapshot is not None:
                    applied = store.apply_subscription_snapshot(
                        conn,
                        parse_subscription(snapshot.data),
                        snapshot.seen_at,
                        now=now,
                        grace=grace,
                        source="grace",
                        source_id=source_id,
                    )
                    result.repaired_from_stripe += int(applied.changed)
                    result.changed += int(applied.changed)
                recomputed = store.recompute_subscription(
                    conn, row["id"], now=now, grace=grace, source="grace", source_id=source_id
                )
                result.changed += int(recomputed.changed)
    if result.checked:
        log.info("access_refreshed", **result.__dict__)
    return result
