"""`flask --app webhooks db init`: apply schema.sql (idempotent; the release phase)."""

from __future__ import annotations

import click
import psycopg
from flask.cli import AppGroup

from subsync import db as database
from webhooks import services

db = AppGroup("db", help="Database schema.")


@db.command("init")
def init() -> None:
    """Apply schema.sql. Safe to run on every deploy: running it twice changes nothing."""
    url = services.current().settings.database_url
    try:
        database.apply_schema(url)
    except psycopg.Error as exc:
        raise click.ClickException(f"could not apply the schema: {exc}".strip()) from None
    click.echo("schema applied")
