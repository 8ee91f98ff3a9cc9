"""The outbox sweep: queue stored events that never reached (or never left) a worker.

Covers Redis down at intake, a process dying between commit and enqueue, a
worker killed -9 mid-apply (Redis would hand its message back only after its
heartbeat timeout and a random maintenance pass: minutes or hours), and a
failed event whose delayed retry Redis lost.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from subsync import logs
from subsync.queue import EventQueue
from subsync.store import events

log = logs.get_logger(__name__)


def sweep(pool: ConnectionPool[Any], queue: EventQueue, older_than: timedelta = events.SWEEP_AFTER) -> int:
    """Queue again every event unfinished for `older_than`; returns how many were sent."""
    total = 0
    while True:
        with pool.connection() as conn:
            ids = events.due_for_sweep(conn, older_than)
        if not ids:
            break
        sent = queue.send(ids, always_try=True)
        total += sent
        if sent < len(ids):  # the broker is down: their enqueued_at is stamped, try next pass
            log.warning("outbox_sweep_incomplete", due=len(ids), sent=sent)
            break
        if len(ids) < events.SWEEP_BATCH:
            break
    if total:
        log.info("outbox_swept", queued=total)
    return total
