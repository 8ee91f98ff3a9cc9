"""The Dramatiq middleware every worker process runs: its database pool, log context and metrics."""

from __future__ import annotations

import os
import sys
from typing import Any

import dramatiq
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from subsync import config, db, logs

# Set on every connection of the worker's pool: a handler waiting on a lock
# this long is stuck behind something else; fail and let Dramatiq retry,
# rather than hold a worker thread.
SERVER_SETTINGS = {"lock_timeout": "5s", "statement_timeout": "30s"}


class DatabasePool(Middleware):
    """Open the PostgreSQL pool in each worker process after it boots (fork safety)."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        logs.configure(self.settings.log_format)
        threads = int(getattr(broker, "worker_threads", 8) or 8)
        db.open_pool(
            self.settings.database_url,
            max_size=max(threads, 4) + 2,
            name="worker",
            timeout=30,
            server_settings=SERVER_SETTINGS,
            autocommit=True,
            # No test round trip per message: apply_event runs through
            # db.run, which replaces a dropped connection at its first use.
            check=False,
        )

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        db.close_pool()


class LogContext(Middleware):
    """Bind each message's context to its log lines; worker threads are reused."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(message_id=message.message_id, actor=message.actor_name)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()


def worker_metrics_enabled(settings: config.Settings, argv0: str | None = None) -> bool:
    """DRAMATIQ_PROMETHEUS=1, and this is the `dramatiq` command (its worker processes).

    Never in another program that builds the worker's broker (the tests run
    workers in-process): the middleware repoints PROMETHEUS_MULTIPROC_DIR and
    forks an exposition server.
    """
    program = os.path.basename(sys.argv[0] if argv0 is None else argv0)
    return settings.dramatiq_prometheus and program.startswith("dramatiq")


def add_worker_metrics(broker: RedisBroker) -> None:
    """Dramatiq's Prometheus middleware: worker metrics on :9191/metrics.

    It serves `dramatiq_messages_total`, `dramatiq_message_errors_total`,
    `dramatiq_message_retries_total`, `dramatiq_message_rejects_total`,
    `dramatiq_messages_inprogress`, `dramatiq_message_duration_milliseconds`
    from a multi-process directory shared by the worker processes
    (`dramatiq_prom_db`; port `dramatiq_prom_port`, default 9191). The
    worker's own counters (`subsync_events_applied_total`,
    `subsync_events_failed_total`) appear on the same endpoint.
    """
    config.use_dramatiq_metrics_dir()
    from dramatiq.middleware.prometheus import Prometheus  # noqa: PLC0415 - reads the environment on import

    broker.add_middleware(Prometheus())
