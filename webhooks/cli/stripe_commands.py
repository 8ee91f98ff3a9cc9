"""Commands that ask Stripe's API: reconcile run, events fetch/backfill, subscriptions refresh/reactivate.

They need STRIPE_API_KEY (and STRIPE_API_BASE for a simulator); every other
command works with DATABASE_URL and REDIS_URL alone.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import click
import psycopg
import psycopg_pool
import stripe
from flask.cli import AppGroup, with_appcontext

from reconciler import accounts, backfill, grace, reconcile
from reconciler.report import MAX_LISTED, Figures
from subsync import config
from subsync.envelope import InvalidPayload
from subsync.reactivate import reactivate
from subsync.reactivation import NotReactivatable
from subsync.stripe_api import StripeApi, make_api
from webhooks import services
from webhooks.cli.output import TIME, echo_json, operator, printable

EXPECTED = (psycopg.Error, psycopg_pool.PoolTimeout, stripe.StripeError, config.ConfigError, InvalidPayload)


def _api() -> StripeApi:
    try:
        return make_api(services.current().settings)
    except config.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _fail(what: str, exc: BaseException) -> click.ClickException:
    return click.ClickException(f"{what}: {type(exc).__name__}: {exc}".replace("\n", " "))


reconcile_group = AppGroup("reconcile", help="Compare every subscription with Stripe's API and repair drift.")


ACCOUNT = click.option(
    "--account",
    metavar="ACCOUNT",
    help="Only this connected account (acct_...), or 'platform' for the platform's own objects;"
    " default: the platform and every connected account we hold anything of.",
)


def _account(value: str | None) -> str | None:
    """The --account option as the reconciler and the backfill take it."""
    if value is None:
        return accounts.ALL_ACCOUNTS
    if value == accounts.PLATFORM:
        return None
    if not value.startswith("acct_"):
        raise click.BadParameter("give a connected account id (acct_...) or 'platform'", param_hint="--account")
    return value


@reconcile_group.command("run")
@click.option("--dry-run", is_flag=True, help="Change nothing; print what would change.")
@ACCOUNT
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def reconcile_run(dry_run: bool, account: str | None, as_json: bool) -> None:
    """One full reconciliation now (the scheduler runs it nightly at RECONCILE_CRON).

    Each connected account is listed on its own account (Stripe-Account);
    the JSON document has each account's figures under `accounts`.
    """
    scope = _account(account)
    api = _api()
    web = services.current()
    try:
        report = reconcile.run(web.pool, api, grace=web.settings.grace_period, dry_run=dry_run, account=scope)
    except reconcile.AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    except EXPECTED as exc:
        raise _fail("the reconciliation failed (recorded in reconciliation_runs)", exc) from None
    if as_json:
        echo_json(report.as_dict())
        return
    verb = "would change" if dry_run else "changed"
    click.echo(f"run {report.run_id} {report.status}{' (dry run)' if dry_run else ''}: {_figures(report)}")
    if report.error:
        click.echo(printable(f"  {report.error}", None))
    if len(report.accounts) > 1:
        for key, figures in report.accounts.items():
            click.echo(f"  {key}: {_figures(figures)}")
    listed = [*report.changes, *report.invoice_changes, *report.entitlement_changes]
    for change in listed[:LISTED]:
        click.echo(printable(_change_line(change, verb), None))
    if len(listed) > LISTED:
        click.echo(f"  ... and more (--json lists up to {MAX_LISTED})")
    for sub_id in report.missing_ids[:LISTED]:
        click.echo(printable(f"  missing in Stripe: {sub_id}", None))
    for invoice_id in report.missing_invoice_ids[:LISTED]:
        click.echo(printable(f"  invoice missing in Stripe: {invoice_id}", None))


# Changes printed in the text report; --json lists up to MAX_LISTED.
LISTED = 100


def _figures(figures: Figures) -> str:
    return (
        f"subscriptions scanned {figures.scanned}, drifted {figures.drifted}, fixed {figures.fixed},"
        f" created {figures.created}, missing in Stripe {figures.missing_in_stripe},"
        f" left alone (newer here) {figures.left_alone_newer}, terminal here {figures.terminal_here};"
        f" invoices scanned {figures.invoices_scanned}, drifted {figures.invoices_drifted},"
        f" fixed {figures.invoices_fixed}, missing in Stripe {figures.invoices_missing};"
        f" ledger rows added {figures.ledger_added};"
        f" entitlements scanned {figures.entitlements_scanned}, drifted {figures.entitlements_drifted},"
        f" fixed {figures.entitlements_fixed}, skipped (no features) {figures.entitlements_skipped};"
        f" accounts failed {figures.accounts_failed}"
    )


def _change_line(change: dict[str, Any], verb: str) -> str:
    what = change.get("subscription_id") or change.get("invoice_id") or change.get("customer_id")
    on = f" [{change['account']}]" if change.get("account") else ""
    if change.get("kind") == "terminal_here":
        return f"  terminal here: {what}{on} is {change.get('stripe_status')} at Stripe; left as the rules say"
    fields = ", ".join(f"{k}: {v[0]} -> {v[1]}" for k, v in change["changes"].items())
    new = " (new)" if change["new"] else ""
    return f"  {verb} {what}{on}{new}: {fields}"


@click.command("fetch")
@with_appcontext
@click.argument("event_id")
@click.option("--account", metavar="ACCOUNT", help="The connected account (acct_...) the event is of.")
def events_fetch(event_id: str, account: str | None) -> None:
    """Pull one event from Stripe's API and ingest it (stored once, queued)."""
    scope = None if account is None else _account(account)
    web = services.current()
    try:
        new = backfill.fetch(web.pool, _api(), web.queue, event_id, account=scope)
    except stripe.InvalidRequestError as exc:
        # A connected account's event exists only on that account: without --account it is not found.
        hint = "" if account else "; an event of a connected account needs --account acct_..."
        raise click.ClickException(f"Stripe has no event {event_id}: {exc.user_message or exc}{hint}") from None
    except EXPECTED as exc:
        raise _fail(f"could not fetch {event_id}", exc) from None
    click.echo(f"{event_id}: {'stored and queued' if new else 'already stored'}")


@click.command("backfill")
@with_appcontext
@click.option(
    "--since",
    type=TIME,
    help="ISO 8601 or relative (2h, 7d); default: the stored checkpoint (first run: all Stripe keeps, 30 days).",
)
@ACCOUNT
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def events_backfill(since: datetime | None, account: str | None, as_json: bool) -> None:
    """List Stripe's events (of each account) and ingest those never received."""
    scope = _account(account)
    web = services.current()
    try:
        report = backfill.backfill(web.pool, _api(), web.queue, since=since, account=scope)
    except EXPECTED as exc:
        raise _fail("the backfill failed", exc) from None
    if as_json:
        echo_json(report.__dict__)
    else:
        refused = f", refused {report.refused} we cannot store" if report.refused else ""
        click.echo(f"listed {report.listed} events from Stripe, recovered {report.recovered} never received{refused}")


@click.command("refresh")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def subscriptions_refresh(as_json: bool) -> None:
    """Recompute time-dependent access now, asking Stripe about expired graces and same-second guesses."""
    web = services.current()
    api = make_api(web.settings) if web.settings.stripe_api_key else None
    try:
        result = grace.refresh(web.pool, grace=web.settings.grace_period, api=api)
    except EXPECTED as exc:
        raise _fail("the refresh failed", exc) from None
    if as_json:
        echo_json(result.__dict__)
    else:
        click.echo(
            f"checked {result.checked}, changed {result.changed}, asked Stripe {result.asked_stripe}"
            f" (repaired {result.repaired_from_stripe}, confirmed {result.confirmed},"
            f" deferred by errors {result.stripe_errors})"
        )


@click.command("reactivate")
@with_appcontext
@click.argument("sub_id")
@click.option("--price", metavar="PRICE", help="The new subscription's price (price_...); default: the old one's.")
@click.option("--dry-run", is_flag=True, help="Say what would be asked of Stripe; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def subscriptions_reactivate(sub_id: str, price: str | None, dry_run: bool, as_json: bool) -> None:
    """Bring back a suspended customer: a new subscription without a trial, its first invoice charging what they owe.

    Creates an invoice item of the subscription's owed amount, then a new
    subscription on the same prices (or --price) with trial_end=now. Run
    twice, it charges once. The old subscription's owed amount becomes 0
    when the new one's first invoice is paid.
    """
    web = services.current()
    api = None if dry_run and not web.settings.stripe_api_key else _api()
    try:
        done = reactivate(web.pool, api, sub_id, requested_by=operator(), price=price, dry_run=dry_run)
    except (NotReactivatable, LookupError) as exc:
        raise click.ClickException(str(exc)) from None
    except EXPECTED as exc:
        raise _fail("the reactivation failed", exc) from None
    if as_json:
        echo_json(dataclasses.asdict(done))
        return
    amount = f"{done.owed_amount} {done.currency or ''}".strip()
    if done.status == "planned":
        prices = ", ".join(f"{i['price']} x{i['quantity']}" for i in done.items)
        item = f"an invoice item of {amount} ({done.description}), then " if done.owed_amount else ""
        click.echo(f"would create {item}a subscription on {prices} for {done.customer_id}, without a trial")
        return
    earlier = " (made by an earlier run: nothing charged again)" if done.already else ""
    click.echo(f"{sub_id} reactivated as {done.new_subscription_id}{earlier}")
    if done.invoice_item_id:
        click.echo(f"  invoice item {done.invoice_item_id}: {amount}, on the new subscription's first invoice")
    if done.status == "settled":
        click.echo("  its first invoice is paid: the old subscription owes nothing more")
    else:
        click.echo("  its owed amount is cleared when the new subscription's first invoice is paid")
