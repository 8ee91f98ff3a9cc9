"""The web process: `webhooks:create_app()` under gunicorn, and the `flask --app webhooks` commands."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import click
import structlog
from flask import Flask, Response, request, request_started
from werkzeug.exceptions import RequestEntityTooLarge

from subsync import config, db, logs


def create_app(settings: config.Settings | None = None) -> Flask:
    """Build the app.

    Serving webhooks needs STRIPE_WEBHOOK_SECRET: without it the app refuses to
    start (ConfigError, one line). The `flask --app webhooks` commands need
    only DATABASE_URL and REDIS_URL, so inside a command the check is skipped.
    """
    settings = settings or config.load()
    in_command = click.get_current_context(silent=True) is not None
    if not in_command:
        settings.require_webhook_secrets()
    logs.configure(settings.log_format)
    if in_command:
        # A command reports an unreachable database in one line
        # (webhooks.cli.output.database); the pool's retry warnings would bury it.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    from webhooks import cli, health, receiver  # noqa: PLC0415 - keep `flask --help` light

    app.register_blueprint(receiver.bp)
    app.register_blueprint(health.bp)
    cli.register(app)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> tuple[Response, int]:
        return receiver.error(
            413, "payload_too_large", f"the body is over MAX_BODY_BYTES ({settings.max_body_bytes} bytes)"
        )

    def bind_request(sender: Flask, **_: Any) -> None:  # noqa: ARG001
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request.headers.get("Request-Id") or uuid.uuid4().hex[:16])

    request_started.connect(bind_request, app)
    # No test before each checkout (a round trip per webhook): the receiver
    # and the health reads go through db.run, which replaces a dropped one.
    db.open_pool(settings.database_url, name="web", max_size=16, check=False)
    return app
