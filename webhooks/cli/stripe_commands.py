"""Commands that ask Stripe's API: reconcile run, events fetch/backfill, subscriptions refresh.

They need STRIPE_API_KEY (and STRIPE_API_BASE for a simulator); every other
command works with DATABASE_URL and REDIS_URL alone.
"""

from __future__ import annotations

from datetime import datetime

import click
import psycopg
import psycopg_pool
import stripe
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from reconciler import backfill, grace, reconcile
from reconciler.stripe_api import StripeApi, make_api
from subsync import config, db
from webhooks.cli.output import TIME, echo_json

EXPECTED = (psycopg.Error, psycopg_pool.PoolTimeout, stripe.StripeError, config.ConfigError)


def _settings() -> config.Settings:
    return current_app.config["SETTINGS"]


def _api() -> StripeApi:
    try:
        return make_api(_settings())
    except config.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _fail(what: str, exc: BaseException) -> click.ClickException:
    return click.ClickException(f"{what}: {type(exc).__name__}: {exc}".replace("\n", " "))


reconcile_group = AppGroup("reconcile", help="Compare every subscription with Stripe's API and repair drift.")


@reconcile_group.command("run")
@click.option("--dry-run", is_flag=True, help="Change nothing; print what would change.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def reconcile_run(dry_run: bool, as_json: bool) -> None:
    """One full reconciliation now (the scheduler runs it nightly at RECONCILE_CRON)."""
    api = _api()
    try:
        report = reconcile.run(db.pool(), api, grace=_settings().grace_period, dry_run=dry_run)
    except reconcile.AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    except EXPECTED as exc:
        raise _fail("the reconciliation failed (recorded in reconciliation_runs)", exc) from None
    if as_json:
        echo_json(report.as_dict())
        return
    verb = "would change" if dry_run else "changed"
    click.echo(
        f"run {report.run_id} {report.status}{' (dry run)' if dry_run else ''}: scanned {report.scanned},"
        f" drifted {report.drifted}, fixed {report.fixed}, created {report.created},"
        f" missing in Stripe {report.missing_in_stripe}, left alone (newer here) {report.left_alone_newer}"
    )
    for change in report.changes[:100]:
        fields = ", ".join(f"{k}: {v[0]} -> {v[1]}" for k, v in change["changes"].items())
        click.echo(f"  {verb} {change['subscription_id']}{' (new)' if change['new'] else ''}: {fields}")
    if len(report.changes) > 100:
        click.echo(f"  ... and {report.drifted + report.created - 100} more (--json lists up to 1000)")
    for sub_id in report.missing_ids[:100]:
        click.echo(f"  missing in Stripe: {sub_id}")


@click.command("fetch")
@with_appcontext
@click.argument("event_id")
def events_fetch(event_id: str) -> None:
    """Pull one event from Stripe's API and ingest it (stored once, queued)."""
    try:
        new = backfill.fetch(db.pool(), _api(), event_id)
    except stripe.InvalidRequestError as exc:
        raise click.ClickException(f"Stripe has no event {event_id}: {exc.user_message or exc}") from None
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def events_backfill(since: datetime | None, as_json: bool) -> None:
    """List Stripe's events and ingest those never received."""
    try:
        report = backfill.backfill(db.pool(), _api(), since=since)
    except EXPECTED as exc:
        raise _fail("the backfill failed", exc) from None
    if as_json:
        echo_json(report.__dict__)
    else:
        click.echo(f"listed {report.listed} events from Stripe, recovered {report.recovered} never received")


@click.command("refresh")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def subscriptions_refresh(as_json: bool) -> None:
    """Recompute time-dependent access now, asking Stripe about expired graces."""
    settings = _settings()
    api = make_api(settings) if settings.stripe_api_key else None
    try:
        result = grace.refresh(db.pool(), grace=settings.grace_period, api=api)
    except EXPECTED as exc:
        raise _fail("the refresh failed", exc) from None
    if as_json:
        echo_json(result.__dict__)
    else:
        click.echo(
            f"checked {result.checked}, changed {result.changed}, asked Stripe {result.asked_stripe}"
            f" (repaired {result.repaired_from_stripe}, deferred by errors {result.stripe_errors})"
        )
