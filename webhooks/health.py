"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import psycopg
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from subsync import db, events, store
from subsync.metrics import EventState, QueueState, StateCollector

# Reads done per scrape are small (partial indexes, two LLEN); never let one hang.
SCRAPE_DB_TIMEOUT_S = 2.0

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return {"status": "ok"}


def _postgres_state() -> str:
    try:
        db.run(db.pool(), lambda conn: conn.execute("SELECT 1"), timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return f"down: {type(exc).__name__}"
    return "ok"


def _redis_state() -> str:
    from worker.broker import broker  # noqa: PLC0415

    try:
        broker.client.ping()
    except Exception as exc:  # noqa: BLE001
        return f"down: {type(exc).__name__}"
    return "ok"


@bp.get("/readyz")
def readyz() -> Any:
    components = {"postgresql": _postgres_state(), "redis": _redis_state()}
    ready = all(state == "ok" for state in components.values())
    body = json.dumps({"ready": ready, "components": components})
    return Response(body, status=200 if ready else 503, mimetype="application/json")


def read_queue() -> QueueState:
    """Dramatiq's Redis queue: the ready list and the delay queue (retries in backoff)."""
    from worker.actors import QUEUE  # noqa: PLC0415
    from worker.broker import broker, settings  # noqa: PLC0415

    key = f"{settings.queue_namespace}:{QUEUE}"
    pipe = broker.client.pipeline(transaction=False)
    pipe.llen(key)
    pipe.llen(f"{key}.DQ")
    ready, delayed = pipe.execute()
    return QueueState(ready=int(ready), delayed=int(delayed))


def read_database() -> tuple[EventState, dict[str, Any] | None]:
    def read(conn: psycopg.Connection[Any]) -> tuple[events.Backlog, dict[str, Any] | None]:
        conn.execute(f"SET LOCAL statement_timeout = '{int(SCRAPE_DB_TIMEOUT_S * 1000)}ms'")
        return events.backlog(conn), store.latest_reconciliation(conn)

    backlog, run = db.run(db.pool(), read, timeout=SCRAPE_DB_TIMEOUT_S)
    oldest = backlog.oldest_unfinished_at
    age = 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
    state = EventState(
        received=backlog.received, processing=backlog.processing, failed=backlog.failed, oldest_unfinished_age_s=age
    )
    return state, run


# Not the default registry: only /metrics reads this state (a worker process
# importing subsync.metrics must not query the database).
STATE = CollectorRegistry()
STATE.register(StateCollector(read_queue, read_database))


@bp.get("/metrics")
def metrics() -> Any:
    """The process counters (all gunicorn workers in multi-process mode), then the shared state."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data + generate_latest(STATE), mimetype=CONTENT_TYPE_LATEST)
