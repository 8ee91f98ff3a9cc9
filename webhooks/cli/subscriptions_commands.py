"""`flask --app webhooks subscriptions show SUB_ID`: local state, access, owed amount, history."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
from flask.cli import AppGroup

from subsync.store import event_queries, reactivations, state_queries
from webhooks.cli.events_commands import change_lines
from webhooks.cli.output import database, echo_json, fields, fmt_time, table

subscriptions = AppGroup("subscriptions", help="Local subscription state, access and its history.")

HISTORY_LIMIT = 200
EVENTS_LIMIT = 10

ACCESS_MEANING = {
    "full": "full (trialing, or active within its period)",
    "grace": "grace (period ended, renewal not yet confirmed)",
    "restricted": "restricted (payment failing or grace over: editing locked)",
    "suspended": "suspended (unpaid, or ended by a failed payment: content removed)",
    "none": "none (incomplete, paused or canceled)",
}


@subscriptions.command("show")
@click.argument("sub_id")
@click.option(
    "--history",
    type=click.IntRange(1, 100_000),
    default=HISTORY_LIMIT,
    show_default=True,
    metavar="N",
    help="Show the newest N changes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def show_command(sub_id: str, history: int, as_json: bool) -> None:
    """One subscription as stored here: status, access, owed amount, its changes and their sources.

    Sources: webhook (an event from Stripe), replay (an event queued again by
    `events replay` or a dashboard resend), reconcile (the nightly comparison
    with Stripe's API; source id = the run), grace (the grace-period check).
    """
    with database() as conn:
        row = state_queries.subscription_row(conn, sub_id)
        if row is None:
            raise click.ClickException(f"no subscription {sub_id}")
        changes = state_queries.changes_of_subscription(conn, sub_id, history)
        invoices = state_queries.invoices_of_subscription(conn, sub_id)
        recent = event_queries.list_events(conn, event_queries.EventFilter(object_id=sub_id), EVENTS_LIMIT)
        reactivation = reactivations.load(conn, sub_id)
    if as_json:
        echo_json(
            {
                "subscription": row,
                "invoices": invoices,
                "changes": changes,
                "events": recent,
                "reactivation": None if reactivation is None else dataclasses.asdict(reactivation),
            }
        )
        return
    owed = "-" if row["owed_amount"] is None else f"{row['owed_amount']} {row['currency'] or ''}".strip()
    pairs: list[tuple[str, Any]] = [
        ("subscription", row["id"]),
        ("customer", row["customer_id"]),
        ("status", row["status"]),
        ("access", ACCESS_MEANING.get(row["access"], row["access"])),
        ("owed amount", owed),
        ("price", row["price_id"]),
        ("period", f"{fmt_time(row['current_period_start'])} -> {fmt_time(row['current_period_end'])}"),
        ("cancel at period end", row["cancel_at_period_end"]),
        ("cancel at", row["cancel_at"]),
        ("canceled at", row["canceled_at"]),
        ("ended at", row["ended_at"]),
        ("trial end", row["trial_end"]),
        ("cancellation reason", row.get("cancellation_reason")),
        ("latest invoice", row["latest_invoice_id"]),
        *(() if reactivation is None else [("reactivated as", _reactivated(reactivation))]),
        ("Stripe state as of", row["stripe_updated_at"]),
        ("updated here", row["updated_at"]),
    ]
    click.echo(fields(pairs))
    if invoices:
        click.echo("\ninvoices (newest first):")
        cols = (
            ("id", "id"),
            ("status", "status"),
            ("amount_due", "due"),
            ("amount_paid", "paid"),
            ("attempt_count", "attempts"),
            ("period_end", "period end"),
        )
        click.echo("\n".join("  " + line for line in table(invoices, cols).splitlines()))
    click.echo(f"\nhistory ({len(changes)} change{'s' if len(changes) != 1 else ''}, oldest first):")
    click.echo("\n".join(change_lines(changes, with_subscription=False)) or "  none")
    if recent:
        click.echo(f"\nnewest events about it (events list --object {sub_id}):")
        event_cols = (("id", "id"), ("type", "type"), ("status", "status"), ("received_at", "received"))
        click.echo("\n".join("  " + line for line in table(recent, event_cols).splitlines()))


def _reactivated(row: reactivations.ReactivationRow) -> str:
    new = row.new_subscription_id or "(not made yet: run reactivate again)"
    return f"{new}, {row.status} (by {row.requested_by} at {fmt_time(row.requested_at)})"
