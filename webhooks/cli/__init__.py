"""The on-call and operator commands: `flask --app webhooks <group> <command>`.

Exit status: 0 success, 1 failure (one line on stderr, no traceback for an
expected condition), 2 bad usage (click's own). `--json` prints one JSON
document on stdout and nothing else there.
"""

from __future__ import annotations

from flask import Flask

from webhooks.cli import db_commands, stripe_commands
from webhooks.cli.events_commands import events
from webhooks.cli.subscriptions_commands import subscriptions

# The commands that ask Stripe's API join the groups they belong to.
events.add_command(stripe_commands.events_fetch)
events.add_command(stripe_commands.events_backfill)
subscriptions.add_command(stripe_commands.subscriptions_refresh)
subscriptions.add_command(stripe_commands.subscriptions_reactivate)


def register(app: Flask) -> None:
    app.cli.add_command(db_commands.db)
    app.cli.add_command(events)
    app.cli.add_command(subscriptions)
    app.cli.add_command(stripe_commands.reconcile_group)
