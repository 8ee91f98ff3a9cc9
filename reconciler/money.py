"""The reconciliation's refunds and disputes pass: the ledger rows Stripe's refunds and disputes imply, where missing.

Per account, every refund and every dispute Stripe lists as created in the
last WINDOW (`GET /v1/refunds?created[gte]=`, `GET
/v1/disputes?created[gte]=`, paged; beyond Stripe's 30 days of events, so
one whose events are gone is still found). A succeeded refund, a
chargeback opened, one won or lost, whose row the ledger lacks gets it
(source `reconcile`) under the key its events give (subsync.reversals), so
nothing is recorded twice whichever comes first. Only the missing ones
cost more requests: whose payment each was (subsync.payment_links), once
per charge. A close found here has no event to date it: the time of
Stripe's answer stands for it. No connection is held while Stripe answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.report import AccountRun
from subsync.ledger import PaymentFact
from subsync.payment_links import LinkFinder
from subsync.reversals import PaymentLinks, dispute_closed_fact, dispute_opened_fact, linked, refund_fact
from subsync.store import payments
from subsync.stripe_api import StripeApi
from subsync.stripe_objects import parse_dispute, parse_refund

WINDOW = timedelta(days=35)

# A fact without its links yet, and the charge they are found through.
_Unlinked = tuple[PaymentFact, str | None]


def reconcile_reversals(run: AccountRun, api: StripeApi) -> None:
    since = int((datetime.now(UTC) - WINDOW).timestamp())
    finder = LinkFinder(api, run.pool, account=run.account)
    nobody = PaymentLinks()
    for page in api.refund_pages(created_gte=since, account=run.account):
        run.figures.refunds_scanned += len(page)
        refunds: list[_Unlinked] = []
        for snapshot in page:
            fact = refund_fact(snapshot.data, nobody, account=run.account)
            if fact is not None:
                refunds.append((fact, parse_refund(snapshot.data).charge_id))
        run.figures.ledger_refunds_added += _add_missing(run, finder, refunds)
    for page in api.dispute_pages(created_gte=since, account=run.account):
        run.figures.disputes_scanned += len(page)
        disputes: list[_Unlinked] = []
        for snapshot in page:
            charge_id = parse_dispute(snapshot.data).charge_id
            opened = dispute_opened_fact(snapshot.data, nobody, account=run.account)
            closed = dispute_closed_fact(snapshot.data, nobody, snapshot.seen_at, account=run.account)
            disputes += [(fact, charge_id) for fact in (opened, closed) if fact is not None]
        run.figures.ledger_disputes_added += _add_missing(run, finder, disputes)


def _add_missing(run: AccountRun, finder: LinkFinder, facts: list[_Unlinked]) -> int:
    """Record the facts the ledger lacks, each with whose payment it was; how many were added."""
    if not facts:
        return 0
    with run.pool.connection() as conn:
        held = payments.recorded_fact_keys(conn, [fact.fact_key for fact, _ in facts])
    missing = [(fact, charge_id) for fact, charge_id in facts if fact.fact_key not in held]
    if run.report.dry_run or not missing:
        return len(missing)
    complete = [linked(fact, finder.of_charge_id(charge_id)) for fact, charge_id in missing]
    with run.pool.connection() as conn, conn.transaction():
        added = payments.record_payments(
            conn, [(f, None) for f in complete], source="reconcile", source_id=run.source_id
        )
    return len(added)
