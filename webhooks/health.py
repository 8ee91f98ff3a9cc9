"""Liveness, readiness and metrics endpoints; readiness and the state they read answer in bounded time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis
from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from psycopg_pool import ConnectionPool
from redis.backoff import NoBackoff
from redis.retry import Retry

from subsync import db
from subsync.broker import queue_keys
from subsync.metrics import EventState, QueueState, StateCollector
from subsync.store import event_queries, jobs
from webhooks import services
from webhooks.probes import Probe, ProbeTimeout

# Each read answers within this, whatever PostgreSQL and Redis do; /readyz
# and /metrics read both servers at once, so they answer within it too.
PROBE_TIMEOUT_S = 1.5
# What PostgreSQL itself may spend on a scrape's reads (partial indexes, two LLEN).
SCRAPE_DB_TIMEOUT_S = 1.0
PROBES = "subsync.probes"

bp = Blueprint("health", __name__)


@dataclass(frozen=True)
class Probes:
    postgresql: Probe[None]
    redis: Probe[None]
    queue: Probe[QueueState]
    database: Probe[tuple[EventState, dict[str, Any] | None]]


def _probes(app: Flask) -> Probes:
    probes: Probes = app.extensions[PROBES]
    return probes


@bp.get("/healthz")
def healthz() -> Any:
    return {"status": "ok"}


def _state(probe: Probe[Any]) -> str:
    try:
        probe.result()
    except ProbeTimeout as exc:
        return f"down: {exc}"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return f"down: {type(exc).__name__}"
    return "ok"


@bp.get("/readyz")
def readyz() -> Any:
    probes = _probes(current_app)
    probes.postgresql.start()
    probes.redis.start()
    components = {"postgresql": _state(probes.postgresql), "redis": _state(probes.redis)}
    ready = all(state == "ok" for state in components.values())
    body = json.dumps({"ready": ready, "components": components})
    return Response(body, status=200 if ready else 503, mimetype="application/json")


def read_queue(client: redis.Redis, namespace: str) -> QueueState:
    """Dramatiq's Redis queue: the ready list and the delay queue (retries in backoff)."""
    ready_key, delayed_key = queue_keys(namespace)
    pipe = client.pipeline(transaction=False)
    pipe.llen(ready_key)
    pipe.llen(delayed_key)
    ready, delayed = pipe.execute()
    return QueueState(ready=int(ready), delayed=int(delayed))


def read_database(pool: ConnectionPool[Any]) -> tuple[EventState, dict[str, Any] | None]:
    def read(conn: psycopg.Connection[Any]) -> tuple[event_queries.Backlog, dict[str, Any] | None]:
        conn.execute(f"SET LOCAL statement_timeout = '{int(SCRAPE_DB_TIMEOUT_S * 1000)}ms'")
        return event_queries.backlog(conn), jobs.latest_reconciliation(conn)

    backlog, run = db.run(pool, read, timeout=SCRAPE_DB_TIMEOUT_S)
    oldest = backlog.oldest_unfinished_at
    age = 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
    state = EventState(
        received=backlog.received, processing=backlog.processing, failed=backlog.failed, oldest_unfinished_age_s=age
    )
    return state, run


STATE_REGISTRY = "subsync.state_registry"


def install(app: Flask) -> None:
    """Register the endpoints, their probes and the registry of the state read at scrape time.

    Not the default registry: only /metrics reads this state (a worker
    process importing subsync.metrics must not query the database). Redis
    is read through a client of its own: short timeouts, no retries.
    """
    web = services.of(app)
    client = redis.Redis.from_url(
        web.settings.redis_url,
        socket_connect_timeout=PROBE_TIMEOUT_S,
        socket_timeout=PROBE_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )

    def select_one() -> None:
        db.run(web.pool, lambda conn: conn.execute("SELECT 1"), timeout=PROBE_TIMEOUT_S)

    def ping() -> None:
        client.ping()

    probes = Probes(
        postgresql=Probe(select_one, timeout=PROBE_TIMEOUT_S, name="postgresql"),
        redis=Probe(ping, timeout=PROBE_TIMEOUT_S, name="redis"),
        queue=Probe(lambda: read_queue(client, web.settings.queue_namespace), timeout=PROBE_TIMEOUT_S, name="queue"),
        database=Probe(lambda: read_database(web.pool), timeout=PROBE_TIMEOUT_S, name="database"),
    )
    app.extensions[PROBES] = probes
    registry = CollectorRegistry()
    registry.register(StateCollector(probes.queue.result, probes.database.result))
    app.extensions[STATE_REGISTRY] = registry
    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics() -> Any:
    """The process counters (all web server workers in multi-process mode), then the shared state."""
    web = services.current()
    probes = _probes(current_app)
    probes.queue.start()  # both reads at once: the scrape waits for the slower, not the sum
    probes.database.start()
    if web.settings.metrics_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=web.settings.metrics_dir)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data + generate_latest(current_app.extensions[STATE_REGISTRY]), mimetype=CONTENT_TYPE_LATEST)
