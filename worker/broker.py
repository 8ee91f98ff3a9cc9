"""The Dramatiq broker (Redis) and the middleware every worker process runs.

Dramatiq binds actors to the global broker when they are declared, so this
module sets it up on import; it opens no connection until a message is sent
or consumed. Delivery is at-least-once: PostgreSQL, not Redis, is what makes
an event applied exactly once (see subsync.events).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from subsync import config, db, logs
from worker import apply

# A web request must not hang on a dead Redis: the event is already stored,
# and the outbox sweep queues it later. redis-py's default retries for ~30 s.
REDIS_CONNECT_TIMEOUT_S = 1.0
REDIS_SOCKET_TIMEOUT_S = 5.0
REDIS_RETRIES = 2
# Redis requeues the messages of a worker killed -9 only after this timeout
# and a random maintenance pass; the outbox sweep in PostgreSQL is the real
# safety net, this only makes Redis's own recovery less slow.
HEARTBEAT_TIMEOUT_MS = 60_000
MAINTENANCE_CHANCE = 20_000  # per million dispatch calls


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
            server_settings=apply.SERVER_SETTINGS,
            autocommit=True,
            # No test round trip per message: apply_event runs through
            # db.run, which replaces a dropped connection at its first use.
            check=False,
        )

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        db.close_pool()


class LogContext(Middleware):
    """Bind each message's context to its log lines; worker threads are reused."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(message_id=message.message_id, actor=message.actor_name)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message


def worker_metrics_enabled(env: dict[str, str] | None = None, argv0: str | None = None) -> bool:
    """DRAMATIQ_PROMETHEUS=1, and this is the `dramatiq` command (its worker processes).

    Never in web or CLI processes, which import this module to queue
    messages: the middleware repoints PROMETHEUS_MULTIPROC_DIR.
    """
    value = (os.environ if env is None else env).get("DRAMATIQ_PROMETHEUS", "")
    program = os.path.basename(sys.argv[0] if argv0 is None else argv0)
    return value.strip().lower() in ("1", "true", "yes", "on") and program.startswith("dramatiq")


def add_worker_metrics(broker: RedisBroker) -> None:
    """Dramatiq's Prometheus middleware: worker metrics on :9191/metrics.

    It serves `dramatiq_messages_total`, `dramatiq_message_errors_total`,
    `dramatiq_message_retries_total`, `dramatiq_message_rejects_total`,
    `dramatiq_messages_inprogress`, `dramatiq_message_duration_milliseconds`
    from a multi-process directory shared by the worker processes
    (`dramatiq_prom_db`, default $TMPDIR/dramatiq-prometheus; port
    `dramatiq_prom_port`, default 9191). Pointing PROMETHEUS_MULTIPROC_DIR at
    the same directory, before subsync.metrics is imported, makes the worker's
    own counters (`subsync_events_applied_total`, `subsync_events_failed_total`)
    appear on the same endpoint.
    """
    path = os.environ.setdefault("dramatiq_prom_db", os.path.join(tempfile.gettempdir(), "dramatiq-prometheus"))
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    from dramatiq.middleware.prometheus import Prometheus  # noqa: PLC0415 - reads the environment on import

    broker.add_middleware(Prometheus())


def make_broker(settings: config.Settings) -> RedisBroker:
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), REDIS_RETRIES),
    )
    broker = RedisBroker(
        client=client,
        namespace=settings.queue_namespace,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )
    broker.add_middleware(DatabasePool(settings))
    broker.add_middleware(LogContext())
    # The actor reads its message's timestamp (worker.apply: skipping what this process applied).
    broker.add_middleware(CurrentMessage())
    if worker_metrics_enabled():
        add_worker_metrics(broker)
    return broker


settings = config.load()
broker = make_broker(settings)
dramatiq.set_broker(broker)
