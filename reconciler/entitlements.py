"""The reconciliation's entitlements pass: each customer's active entitlements against Stripe's, repaired.

Per account, one request first (`GET /v1/entitlements/features?limit=1`):
an account without a single feature entitles nobody, so its customers
are not asked about one by one (`entitlements_skipped`), only those still
holding entitlements here (which Stripe can no longer have granted). An
account that has features gets one list per customer with a subscription
or a set here (`GET /v1/entitlements/active_entitlements?customer=`, to
the end), a page of customers at a time, compared with the set held:

* ours newer than the answer (a summary applied since): left alone
  (`left_alone_newer`);
* different: drift (`entitlements_drifted`), the set replaced under the
  customer's lock with the answer's time (`entitlements_fixed`), unless a
  summary newer than the answer was applied meanwhile.

No connection is held while Stripe answers.
"""

from __future__ import annotations

from reconciler.report import AccountRun
from subsync import entitlements as stripe_entitlements
from subsync.store import entitlements, locks
from subsync.store.entitlements import HeldSet
from subsync.stripe_api import StripeApi
from subsync.stripe_objects import Entitlement

# Customers read from our tables at a time; Stripe is asked about each.
CUSTOMER_PAGE = 1000


def reconcile_entitlements(run: AccountRun, api: StripeApi) -> None:
    if not stripe_entitlements.has_features(api, account=run.account):
        with run.pool.connection() as conn:
            held = entitlements.customers_with_entitlements(conn, account=run.account)
            run.figures.entitlements_skipped += entitlements.count_customers_to_reconcile(
                conn, account=run.account
            ) - len(held)
        for start in range(0, len(held), CUSTOMER_PAGE):
            _customer_page(run, api, held[start : start + CUSTOMER_PAGE])
        return
    after = ""
    while True:
        with run.pool.connection() as conn:
            page = entitlements.customers_to_reconcile(conn, account=run.account, after=after, limit=CUSTOMER_PAGE)
        if not page:
            return
        _customer_page(run, api, page)
        after = page[-1]


def _customer_page(run: AccountRun, api: StripeApi, customer_ids: list[str]) -> None:
    with run.pool.connection() as conn:
        held = entitlements.load_sets(conn, customer_ids)
    for customer_id in customer_ids:
        _customer(run, api, customer_id, held.get(customer_id))


def _customer(run: AccountRun, api: StripeApi, customer_id: str, held: HeldSet | None) -> None:
    listed, seen_at = stripe_entitlements.active_entitlements(api, customer_id, account=run.account)
    run.figures.entitlements_scanned += 1
    if held is not None and held.stripe_updated_at > seen_at:
        run.figures.left_alone_newer += 1
        return
    before = () if held is None else held.entitlements
    if before == listed:
        return
    run.figures.entitlements_drifted += 1
    run.report.note(
        {
            "customer_id": customer_id,
            "account": run.account,
            "new": held is None,
            "changes": {"features": [_keys(before), _keys(listed)]},
        }
    )
    if run.report.dry_run:
        return
    with run.pool.connection() as conn, conn.transaction():
        locks.lock_objects(conn, [locks.entitlements_key(customer_id)])
        applied = entitlements.apply_entitlement_set(conn, customer_id, listed, seen_at, account=run.account)
    if applied.stale:
        run.figures.left_alone_newer += 1
    elif applied.changed:
        run.figures.entitlements_fixed += 1


def _keys(entitlements_: tuple[Entitlement, ...]) -> list[str]:
    return sorted(e.lookup_key for e in entitlements_)
