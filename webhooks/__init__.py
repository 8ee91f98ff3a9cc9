"""The web process: `webhooks:create_app()` under the web server, and the `flask --app webhooks` commands."""

from __future__ import annotations

import logging
import re
import uuid

import click
import structlog
from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from subsync import config, db, logs
from subsync.broker import make_broker
from subsync.queue import BackgroundSender, EventQueue
from webhooks import services
from webhooks.group_commit import GroupCommit

# Stripe's request ids (`req_...`): anything else in the header is not
# logged, so a forged header cannot put text of its choosing in our logs.
REQUEST_ID = re.compile(r"req_[A-Za-z0-9]{1,64}")

# A delivery holds a connection for its INSERT only, after its body is read:
# fewer connections than threads keep PostgreSQL as busy as it can be, and
# leave max_connections to the other processes (each web process has its own).
WEB_POOL_SIZE = 8


def bind_request() -> None:
    """Each request's log lines carry its own request id and nothing of the request before on this thread."""
    structlog.contextvars.clear_contextvars()
    given = request.headers.get("Request-Id", "")
    request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
    structlog.contextvars.bind_contextvars(request_id=request_id)


def create_app(settings: config.Settings | None = None, *, commands: bool | None = None) -> Flask:
    """Build the app.

    Serving webhooks needs STRIPE_WEBHOOK_SECRET and the deployment's mode
    (the API key's, or STRIPE_MODE): without them the app refuses to start
    (ConfigError, one line). The `flask --app webhooks` commands need
    only DATABASE_URL and REDIS_URL, so inside a command the check is skipped.
    The commands (and the reconciler and rules behind them) are loaded only
    inside the `flask` command, or when `commands` asks for them: a serving
    process imports just the receiver.
    """
    settings = settings or config.load()
    in_command = click.get_current_context(silent=True) is not None
    if not in_command:
        settings.require_webhook_secrets()
        settings.require_mode()
    logs.configure(settings.log_format)
    if in_command:
        # A command reports an unreachable database in one line
        # (webhooks.cli.output.database); the pool's retry warnings would bury it.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    from webhooks import health, receiver  # noqa: PLC0415 - keep `flask --help` light

    app.register_blueprint(receiver.bp)
    if in_command if commands is None else commands:
        from webhooks import cli  # noqa: PLC0415

        cli.register(app)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> tuple[Response, int]:
        return receiver.error(
            413, "payload_too_large", f"the body is over MAX_BODY_BYTES ({settings.max_body_bytes} bytes)"
        )

    # A hook of the app's own (held strongly, unlike a signal's receiver):
    # every request starts with a clean log context of its own.
    app.before_request(bind_request)
    # No test before each checkout (a round trip per webhook): the receiver
    # and the health reads go through db.run, which replaces a dropped one.
    pool = db.open_pool(settings.database_url, name="web", max_size=WEB_POOL_SIZE, check=False)
    queue = EventQueue(make_broker(settings))
    # A command that needs the mode (fetch, backfill) needs the API key, which says it.
    livemode = bool(settings.livemode)
    sender = BackgroundSender(queue.send)
    intake = GroupCommit(pool, sender.submit, livemode=livemode)
    services.install(app, services.Services(settings, pool, queue, sender, intake, livemode))
    health.install(app)
    return app
