"""The worker process's entry point: `dramatiq worker.app:setup` (the Procfile's `worker` line).

Dramatiq calls `setup` in each worker process before it starts consuming:
it reads the settings, builds the broker with the worker's middleware,
declares the actor and makes the broker Dramatiq's global one.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from subsync import config
from subsync.broker import make_broker
from worker import actors
from worker.middleware import DatabasePool, LogContext, add_worker_metrics, worker_metrics_enabled


def build(settings: config.Settings) -> RedisBroker:
    """A broker with the worker's middleware and the apply actor declared on it."""
    broker = make_broker(settings)
    broker.add_middleware(DatabasePool(settings))
    broker.add_middleware(LogContext())
    if worker_metrics_enabled(settings):
        add_worker_metrics(broker)
    actors.declare(broker, settings)
    return broker


def setup() -> None:
    """Dramatiq's broker callable: build the worker's broker from the environment and set it."""
    dramatiq.set_broker(build(config.load()))
