"""The full reconciliation: Stripe's subscriptions, invoices, entitlements, refunds and disputes against ours.

For each account covered (the platform's own, and every connected account
we hold anything of, each listed on its own account):

1. subscriptions: every one Stripe has (`status=all`), a page (100) at a
   time, compared with our row and items by the transition rules
   themselves (subsync.drift): any column the rules would change is drift,
   derived ones included. The ids Stripe listed go to a temporary table on
   the run's own connection, which is how rows we have and Stripe lacks
   are found at the end without holding every id in Python.
2. invoices: every one Stripe lists as created in the last
   INVOICE_WINDOW (paged), then every invoice still `draft` or `open` here
   that is older, retrieved one by one. A paid invoice whose payment the
   ledger lacks gets its row (source `reconcile`), and so does each failed
   attempt its attempt count implies (ledger.facts_implied_by_invoice): an
   `invoice.paid` lost, even one older than Stripe's 30 days of events,
   still reaches the ledger.
3. entitlements: each customer's active entitlements (reconciler/entitlements.py).
4. refunds and disputes: those created in the last 35 days, the ledger rows
   they imply and the ledger lacks added (reconciler/money.py).

Repairs go through the worker's own paths (`apply_subscription_snapshots`,
`subsync.invoice_effects.apply_invoices`): access, owed amount, the audit trail (source
`reconcile`, source id the run id) and NOTIFY follow. A snapshot is stamped
with the `Date` of the answer that carried it, so a webhook applied after
the page was fetched is newer and is left alone. Pages are read one ahead
(reconciler/readahead.py), so memory stays flat however many there are.

One run at a time across every process and machine (advisory lock). A run
that dies stays 'running' in reconciliation_runs until the next run, holding
the lock, marks it failed ('interrupted') and starts cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import stripe
from psycopg_pool import ConnectionPool

from reconciler import accounts
from reconciler.bulk import BulkWrites
from reconciler.entitlements import reconcile_entitlements
from reconciler.money import reconcile_reversals
from reconciler.readahead import read_ahead
from reconciler.report import MAX_LISTED, AccountRun, Figures, Report, note_verdict
from subsync import drift, logs
from subsync.invoice_effects import apply_invoices
from subsync.ledger import PaymentFact, facts_implied_by_invoice, facts_implied_by_subscription
from subsync.reactivation import reactivated_by
from subsync.store import invoices, jobs, locks, payments, subscriptions
from subsync.stripe_api import Snapshot, StripeApi
from subsync.stripe_objects import InvoiceSnapshot, SubscriptionSnapshot, parse_invoice, parse_subscription
from subsync.transitions import SubscriptionState

log = logs.get_logger(__name__)

# Invoices created this recently are listed from Stripe; older ones are
# asked about one by one while still draft or open here. Beyond Stripe's
# 30 days of events, so a payment whose events are gone is still found.
INVOICE_WINDOW = timedelta(days=35)


# What repairs write, whose statistics a run that fills them keeps up (reconciler.bulk).
WRITTEN_TABLES = (
    "subscriptions",
    "subscription_items",
    "invoices",
    "payments",
    "subscription_changes",
    "access_changes",
)


class AlreadyRunning(Exception):
    """Another reconciliation holds the lock."""


# --- subscriptions ------------------------------------------------------------------


def _reconcile_subscriptions(run: AccountRun, api: StripeApi) -> None:
    with run.pool.connection() as seen_conn:
        subscriptions.start_seen(seen_conn)
        for page in read_ahead(api.subscription_pages(account=run.account), name="reconcile-pages"):
            subscriptions.add_seen(seen_conn, [snapshot.data["id"] for snapshot in page])
            _subscription_page(run, page, now=datetime.now(UTC))
        for sub_id in subscriptions.not_seen(seen_conn, account=run.account):
            run.figures.missing_in_stripe += 1
            if len(run.report.missing_ids) < MAX_LISTED:
                run.report.missing_ids.append(sub_id)


def _subscription_page(run: AccountRun, page: list[Snapshot], *, now: datetime) -> None:
    parsed = [(parse_subscription(s.data, account=run.account), s.seen_at) for s in page]
    ids = [snapshot.id for snapshot, _ in parsed]
    # A canceled subscription's CANCELLED row, which its lost `customer.subscription.deleted` would have given.
    facts = [fact for s in page for fact in facts_implied_by_subscription(s.data, s.seen_at, account=run.account)]
    with run.pool.connection() as conn:
        ours = subscriptions.load_subscriptions(conn, ids)
        our_items, filed_under = subscriptions.load_items_with_accounts(conn, ids)
        unpaid = invoices.unpaid_invoices(conn, ids)
        missing_facts = _missing_facts(conn, facts)
        to_apply: list[tuple[SubscriptionSnapshot, datetime]] = []
        for snapshot, seen_at in parsed:
            run.figures.scanned += 1
            verdict = drift.subscription(
                ours.get(snapshot.id),
                our_items.get(snapshot.id, ()),
                snapshot,
                seen_at,
                now=now,
                grace=run.grace,
                unpaid_invoice=unpaid.get(snapshot.id),
                our_item_accounts=filed_under.get(snapshot.id, ()),
            )
            repair = note_verdict(run, verdict, "subscription_id", snapshot.id, stripe_status=snapshot.status)
            # A row marked for confirmation (subsync.transitions rule 5) that Stripe's answer shows right
            # is no drift, but is still written, to clear the mark.
            marked = verdict.kind == "same" and _marked(ours.get(snapshot.id))
            if not repair and not marked:
                continue
            to_apply.append((snapshot, seen_at))
        if run.report.dry_run:
            run.figures.ledger_added += len(missing_facts)
            return
        if not to_apply and not missing_facts:
            return
        with conn.transaction():
            applied = (
                subscriptions.apply_subscription_snapshots(
                    conn, to_apply, now=now, grace=run.grace, source="reconcile", source_id=run.source_id
                )
                if to_apply
                else []
            )
            run.figures.ledger_added += _record(run, conn, missing_facts)
        run.bulk.wrote(len(to_apply))
        for (snapshot, _), result in zip(to_apply, applied, strict=True):
            if result.stale:  # a webhook applied since the comparison
                run.figures.left_alone_newer += 1
            elif snapshot.id in ours and result.changed:
                run.figures.fixed += 1


def _marked(ours: SubscriptionState | None) -> bool:
    return ours is not None and ours.confirm_requested_at is not None


def _missing_facts(conn: psycopg.Connection[Any], facts: list[PaymentFact]) -> list[PaymentFact]:
    """The facts of a page the ledger lacks."""
    if not facts:
        return []
    recorded = payments.recorded_fact_keys(conn, [f.fact_key for f in facts])
    return [fact for fact in facts if fact.fact_key not in recorded]


def _record(run: AccountRun, conn: psycopg.Connection[Any], facts: list[PaymentFact]) -> int:
    """Record the facts the ledger lacked (source `reconcile`); how many were new."""
    if not facts:
        return 0
    return len(payments.record_payments(conn, [(f, None) for f in facts], source="reconcile", source_id=run.source_id))


# --- invoices -----------------------------------------------------------------------


def _reconcile_invoices(run: AccountRun, api: StripeApi) -> None:
    since = datetime.now(UTC) - INVOICE_WINDOW
    pages = api.invoice_pages(created_gte=int(since.timestamp()), account=run.account)
    for page in read_ahead(pages, name="reconcile-invoice-pages"):
        _invoice_page(run, page, now=datetime.now(UTC))
    with run.pool.connection() as conn:
        older = invoices.unfinished_created_before(conn, since, account=run.account)
    for invoice_id in older:
        try:
            snapshot = api.retrieve_invoice(invoice_id, account=run.account)
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_missing":
                raise
            # Stripe deletes drafts outright; no status says so, so the row is reported, not changed.
            run.figures.invoices_missing += 1
            if len(run.report.missing_invoice_ids) < MAX_LISTED:
                run.report.missing_invoice_ids.append(invoice_id)
            continue
        _invoice_page(run, [snapshot], now=datetime.now(UTC))


def _invoice_page(run: AccountRun, page: list[Snapshot], *, now: datetime) -> None:
    parsed = [(parse_invoice(s.data, account=run.account), s.data, s.seen_at) for s in page]
    with run.pool.connection() as conn:
        ours = invoices.load_invoices(conn, [snapshot.id for snapshot, _, _ in parsed])
        facts = [
            fact for _, data, seen_at in parsed for fact in facts_implied_by_invoice(data, seen_at, account=run.account)
        ]
        missing_facts = _missing_facts(conn, facts)
        to_apply: list[tuple[InvoiceSnapshot, datetime]] = []
        for snapshot, _, seen_at in parsed:
            run.figures.invoices_scanned += 1
            verdict = drift.invoice(ours.get(snapshot.id), snapshot, seen_at)
            if note_verdict(
                run,
                verdict,
                "invoice_id",
                snapshot.id,
                created="invoices_drifted",
                drifted="invoices_drifted",
                stripe_status=snapshot.status,
            ):
                to_apply.append((snapshot, seen_at))
        if run.report.dry_run:
            run.figures.ledger_added += len(missing_facts)
            return
        if not to_apply and not missing_facts:
            return
        with conn.transaction():
            keys = [locks.invoice_keys(s.id, s.subscription_id, reactivated_by(data)) for s, data, _ in parsed]
            locks.lock_objects(conn, [key for invoice_keys in keys for key in invoice_keys])
            written = apply_invoices(
                conn, to_apply, now=now, grace=run.grace, source="reconcile", source_id=run.source_id
            )
            run.figures.invoices_fixed += sum(written)
            run.figures.ledger_added += _record(run, conn, missing_facts)
        run.bulk.wrote(len(to_apply))


# --- the run ------------------------------------------------------------------------

# The passes over one account's objects, in this order: subscriptions first,
# so that an invoice's subscription is ours before the invoice is compared,
# and every customer with a subscription is known to the entitlements pass;
# refunds and disputes last, when the invoices they name are ours to read.
PASSES: tuple[Callable[[AccountRun, StripeApi], None], ...] = (
    _reconcile_subscriptions,
    _reconcile_invoices,
    reconcile_entitlements,
    reconcile_reversals,
)


def _reconcile_account(
    pool: ConnectionPool[Any], api: StripeApi, report: Report, *, account: str | None, grace: timedelta
) -> None:
    """One account's subscriptions and invoices, listed on that account, against our rows of it.

    A connected account Stripe refuses us (403: revoked, or unknown to our
    key) is recorded as failed, with what its passes did before, and the
    run goes on with the other accounts. The platform refusing us fails the
    run: that is the key itself.
    """
    key = accounts.key(account)
    figures = report.accounts.setdefault(key, Figures())
    run = AccountRun(pool, report, figures, account, grace, BulkWrites(pool, WRITTEN_TABLES))
    try:
        for each_pass in PASSES:
            each_pass(run, api)
    except stripe.PermissionError as exc:
        if account is None:
            raise
        figures.accounts_failed = 1
        report.account_errors[key] = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("reconcile_account_refused", run_id=report.run_id, account=account, code=exc.code)
    report.add(figures)


def _partial(report: Report) -> str | None:
    """What a run that could not reconcile every account says in `error`; None when it did."""
    if not report.account_errors:
        return None
    refused = ", ".join(sorted(report.account_errors))
    text = f"partial: Stripe refused {len(report.account_errors)} connected account(s), not reconciled: {refused}"
    return text[:2000]


def run(
    pool: ConnectionPool[Any],
    api: StripeApi,
    *,
    grace: timedelta,
    dry_run: bool = False,
    account: str | None = accounts.ALL_ACCOUNTS,
) -> Report:
    """One reconciliation (every account, or one). Raises AlreadyRunning, or the Stripe/DB error that failed it."""
    report = Report(dry_run=dry_run)
    with jobs.exclusive(pool, "reconcile") as got:
        if not got:
            msg = "another reconciliation is running"
            raise AlreadyRunning(msg)
        with pool.connection() as conn:
            report.run_id = jobs.start_reconciliation(conn, dry_run=dry_run)
        log.info("reconcile_started", run_id=report.run_id, dry_run=dry_run)
        try:
            for each in accounts.in_scope(pool, account):
                _reconcile_account(pool, api, report, account=each, grace=grace)
            report.status = "succeeded"
            report.error = _partial(report)
        except Exception as exc:
            report.status = "failed"
            report.error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning("reconcile_failed", run_id=report.run_id, error_type=type(exc).__name__)
            raise
        finally:
            assert report.run_id is not None
            with pool.connection() as conn:
                document = report.as_dict()
                jobs.finish_reconciliation(
                    conn,
                    report.run_id,
                    report.status,
                    {name: document[name] for name in jobs.RUN_FIGURES},
                    report.error,
                    accounts=document["accounts"],
                )
            log.info(
                "reconcile_finished",
                run_id=report.run_id,
                status=report.status,
                accounts=len(report.accounts),
                **report.totals(),
            )
    return report
