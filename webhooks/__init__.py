"""The web process: `webhooks:create_app()` under the web server, and the `flask --app webhooks` commands."""

from __future__ import annotations

import logging

import click
from flask import Flask, request

from subsync import config, db, logs
from subsync.broker import make_broker
from subsync.queue import BackgroundSender, EventQueue
from webhooks import services
from webhooks.group_commit import GroupCommit

# A delivery holds a connection for its INSERT only, after its body is read:
# fewer connections than threads keep PostgreSQL as busy as it can be, and
# leave max_connections to the other processes (each web process has its own).
WEB_POOL_SIZE = 8


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

    from webhooks import health, receiver  # noqa: PLC0415 - keep `flask --help` light

    if in_command if commands is None else commands:
        from webhooks import cli  # noqa: PLC0415

        cli.register(app)

    # A hook of the app's own (held strongly, unlike a signal's receiver):
    # every request Flask serves starts with a clean log context of its own.
    app.before_request(lambda: receiver.bind_request_id(request.headers.get("Request-Id")))
    # No test before each checkout (a round trip per webhook): the receiver
    # and the health reads go through db.run, which replaces a dropped one.
    pool = db.open_pool(settings.database_url, name="web", max_size=WEB_POOL_SIZE, check=False)
    queue = EventQueue(make_broker(settings))
    # A command that needs the mode (fetch, backfill) needs the API key, which says it.
    livemode = bool(settings.livemode)
    sender = BackgroundSender(queue.send)
    intake = GroupCommit(pool, sender.submit, livemode=livemode)
    web = services.Services(settings, pool, queue, sender, intake, livemode)
    services.install(app, web)
    receiver.mount(app, web)
    health.install(app)
    return app
