"""The web process (Procfile `web`): granian serving `webhooks:create_app()` over WSGI.

    python -m webhooks.serve [MODULE:FACTORY]

The argument is for the benches, which serve their own apps the same way.

A launcher rather than granian's command line: the web process must refuse
to start without a webhook secret, in one line, before any worker starts;
must flush each worker's sender thread when that worker stops; and must
give /metrics a multi-process directory shared by the workers. granian's
command line has no hooks for any of these, and its settings would be
shell variables in the Procfile; here they are read through
subsync.config like every other setting.

Slow clients: granian reads requests in Rust and hands a request to a
Python thread once its headers are in, so idle connections and requests
whose headers never end hold no thread. A body that trickles in does: the
app's read blocks its thread until the body is complete.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.server.mp import MPServer

from subsync import config

DEFAULT_APP = "webhooks:create_app"
# On a graceful stop, send what the receiver handed to the sender thread;
# what is still unsent after this is queued by the outbox sweep.
SENDER_FLUSH_S = 5.0
# SIGTERM and SIGHUP let each worker finish its requests in flight; a worker
# still busy after this long is killed (its requests were answered 5xx or
# not at all, and Stripe delivers them again).
GRACEFUL_TIMEOUT_S = 30


# granian's own lines (its `_granian` logger, the Rust side's too) in the
# same structured format as the app's. The access logger stays off: the app
# logs one line per delivery.
def log_config(settings: config.Settings) -> dict[str, Any]:
    return {
        "formatters": {"structlog": {"()": "subsync.logs.formatter", "log_format": settings.log_format}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "structlog", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "_granian": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def _wsgi_worker(*args: Any, metrics_dir: str, **kwargs: Any) -> None:
    """granian's WSGI worker, then what gunicorn's worker_exit and child_exit hooks did.

    granian's worker returns once its server has finished the requests in
    flight; the sender is flushed after that, so the ids of those requests
    are sent too. `metrics_dir` is the multi-process directory the launcher
    chose, where this worker's files are marked dead.
    """
    try:
        MPServer._spawn_wsgi_worker(*args, **kwargs)
    finally:
        from prometheus_client import multiprocess  # noqa: PLC0415 - in the worker, after the app

        from subsync.queue import flush_senders  # noqa: PLC0415

        flush_senders(SENDER_FLUSH_S)
        multiprocess.mark_process_dead(os.getpid(), metrics_dir)  # type: ignore[no-untyped-call]


def build(settings: config.Settings, app: str = DEFAULT_APP) -> MPServer:
    return MPServer(
        app,
        address="0.0.0.0",  # noqa: S104 - the platform routes to this port
        port=settings.port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=settings.web_concurrency,
        blocking_threads=settings.web_threads,
        factory=True,
        log_dictconfig=log_config(settings),
        log_access=False,
        # A worker that dies is replaced, as gunicorn did.
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_TIMEOUT_S,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        settings = config.load()
        settings.require_webhook_secrets()
        settings.require_mode()
    except config.ConfigError as exc:
        print(f"subsync web: {exc}", file=sys.stderr)  # noqa: T201 - before logging is set up, one line
        return 1
    # /metrics must add up every worker process.
    metrics_dir = config.use_metrics_dir(settings.metrics_dir)
    worker = functools.partial(_wsgi_worker, metrics_dir=metrics_dir)
    build(settings, args[0] if args else DEFAULT_APP).serve(spawn_target=worker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
