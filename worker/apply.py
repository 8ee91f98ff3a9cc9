"""Apply one stored event exactly once.

1. claim: mark it `processing`, count the attempt (own short commit);
2. one transaction: lock the event row, skip it if already done, run its
   handler, mark it `processed`/`ignored`. A crash anywhere in it rolls back
   everything, and the row stays `processing` for the outbox sweep;
3. on an exception: roll back, record `failed` with the error, re-raise so
   Dramatiq retries with backoff.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from subsync import events, logs, metrics
from worker.handlers import context_for, handler_for

log = logs.get_logger(__name__)

# Set on every connection of the worker's pool (subsync.db.open_pool): a
# handler waiting on a lock this long is stuck behind something else; fail and
# let Dramatiq retry, rather than hold a worker thread.
SERVER_SETTINGS = {"lock_timeout": "5s", "statement_timeout": "30s"}


def apply_event(pool: ConnectionPool[Any], event_id: str, *, grace: timedelta) -> str:
    """Apply the stored event `event_id`; returns its outcome."""
    started = time.perf_counter()
    structlog.contextvars.bind_contextvars(event_id=event_id)
    with pool.connection() as conn:
        if not events.claim(conn, event_id):
            log.debug("event_skipped", reason="already applied or unknown")
            return "skipped"
        event_type = "?"
        try:
            with conn.transaction():
                stored = events.lock_for_apply(conn, event_id)
                if stored is None or stored.status in ("processed", "ignored"):
                    return "skipped"
                event_type = stored.type
                structlog.contextvars.bind_contextvars(event_type=event_type)
                handler = handler_for(stored.type)
                if handler is None:
                    outcome = "ignored"
                else:
                    ctx = context_for(event_id, stored.payload, replayed=stored.replays > 0, grace=grace)
                    outcome = handler(conn, ctx)
                events.finish(conn, event_id, outcome)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            metrics.EVENTS_FAILED.labels(type=event_type).inc()
            log.warning("event_failed", error=error)
            if not conn.closed:
                try:
                    events.fail(conn, event_id, error)
                except psycopg.Error as record_exc:
                    log.warning("event_failure_not_recorded", error=str(record_exc))
            raise
    metrics.EVENTS_APPLIED.labels(type=event_type, outcome=outcome).inc()
    log.info("event_applied", outcome=outcome, duration_ms=round((time.perf_counter() - started) * 1000, 2))
    return outcome
