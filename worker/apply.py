"""Apply one stored event exactly once, and with it a few others still waiting.

1. claim: mark the message's event `processing`, count the attempt (own
   short commit);
2. one transaction: lock the event row, skip it if already done; lock up to
   BATCH_OTHERS more events still `received` that no one else holds; take
   every advisory lock their handlers need, in one order; run each handler,
   in the order received; mark them all `processed`/`ignored`. A crash
   anywhere in it rolls back everything: the claimed row stays `processing`
   for the outbox sweep, the others stay `received` for their own messages;
3. on an exception in the message's own event: roll back, record `failed`
   with the error, re-raise so Dramatiq retries with backoff;
4. on an exception in another event: roll back, leave that one to its own
   message (where it fails, is recorded and retried like any other), and
   apply the message's event again on its own.

Why several at once: one commit (a WAL flush), one round of locks and one
status update for many events is most of what a burst costs. The messages of
the others still arrive; their claim waits while the batch holds the rows,
then finds them done and skips. A message that reaches the process that
applied its event, and was sent before that, skips before the claim.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from subsync import db, events, logs, metrics, store
from worker.handlers import context_for, handler_for, lock_keys

log = logs.get_logger(__name__)

# Set on every connection of the worker's pool (subsync.db.open_pool): a
# handler waiting on a lock this long is stuck behind something else; fail and
# let Dramatiq retry, rather than hold a worker thread.
SERVER_SETTINGS = {"lock_timeout": "5s", "statement_timeout": "30s"}
# Events the actor applies alongside the message's own, at most. Enough that the commit
# and the bookkeeping are shared; few enough that a transaction stays short
# (others wait on its locks) and a failure costs little to redo.
BATCH_OTHERS = 15
# Events that made a batch fail are left to their own messages; this process
# does not pick them again. Bounded: forgetting one only costs another retry.
MAX_EXCLUDED = 1000


class _OtherFailed(Exception):
    """An event applied alongside failed: the batch was rolled back."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


class _Excluded:
    """The ids this process keeps out of its batches (thread-safe, bounded)."""

    def __init__(self, limit: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, event_id: str) -> None:
        with self._lock:
            self._ids[event_id] = None
            while len(self._ids) > self._limit:
                self._ids.popitem(last=False)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)


_excluded = _Excluded(MAX_EXCLUDED)

# Ids this process applied, with when; their own messages then skip without
# the claim's round trip (about 9% of a burst's CPU per event, measured).
# Bounded: forgetting one only costs that round trip.
MAX_APPLIED_HERE = 20_000
# Only a message sent this long before the apply is skipped: one sent after
# it (a replay, the outbox sweep) must reach the claim even when its
# sender's clock runs a little behind this host's.
CLOCK_MARGIN_MS = 2_000


class _AppliedHere:
    """The events this process applied, and when (thread-safe, bounded)."""

    def __init__(self, limit: int) -> None:
        self._at: OrderedDict[str, int] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, event_ids: list[str], at_ms: int) -> None:
        with self._lock:
            for event_id in event_ids:
                self._at[event_id] = at_ms
                self._at.move_to_end(event_id)
            while len(self._at) > self._limit:
                self._at.popitem(last=False)

    def take(self, event_id: str, sent_at_ms: int) -> bool:
        """True once if `event_id` was applied here after a message sent at `sent_at_ms`.

        Such a message was queued for the state already applied (Stripe's
        delivery, a sweep that raced the apply): the claim would find the
        event done. One sent later may be for a replay of it, and goes on.
        """
        with self._lock:
            applied_at = self._at.get(event_id)
            if applied_at is None or sent_at_ms >= applied_at - CLOCK_MARGIN_MS:
                return False
            del self._at[event_id]
            return True


_applied_here = _AppliedHere(MAX_APPLIED_HERE)


def apply_event(
    pool: ConnectionPool[Any], event_id: str, *, grace: timedelta, others: int = 0, sent_at_ms: int | None = None
) -> str:
    """Apply the stored event `event_id`, and up to `others` waiting ones; returns its outcome.

    The actor passes BATCH_OTHERS; a caller applying one chosen event (a
    test, a tool) leaves the rest alone. The actor also passes when its
    message was sent: a message for an event this process applied since is
    skipped without a round trip.
    """
    if sent_at_ms is not None and _applied_here.take(event_id, sent_at_ms):
        log.debug("event_skipped", event_id=event_id, reason="applied by this process after the message was sent")
        return "skipped"
    started = time.perf_counter()
    structlog.contextvars.bind_contextvars(event_id=event_id)

    def claim_and_apply(conn: psycopg.Connection[Any]) -> list[tuple[events.StoredEvent, str]] | None:
        # Safe to run twice (db.run, after a dropped connection): a second
        # claim finds the event applied, or counts the attempt it is.
        if not events.claim(conn, event_id):
            log.debug("event_skipped", reason="already applied or unknown")
            return None
        try:
            return _apply(conn, event_id, grace, others)
        except _OtherFailed as exc:
            _excluded.add(exc.event_id)
            return _apply(conn, event_id, grace, 0)

    outcomes = db.run(pool, claim_and_apply)
    if outcomes is None:
        return "skipped"
    _applied_here.add([stored.id for stored, _ in outcomes], int(time.time() * 1000))
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    own = "skipped"
    for stored, outcome in outcomes:
        metrics.EVENTS_APPLIED.labels(type=stored.type, outcome=outcome).inc()
        structlog.contextvars.bind_contextvars(event_id=stored.id, event_type=stored.type)
        log.info("event_applied", outcome=outcome, duration_ms=duration_ms, batch=len(outcomes))
        if stored.id == event_id:
            own = outcome
    structlog.contextvars.bind_contextvars(event_id=event_id)
    return own


def _apply(
    conn: psycopg.Connection[Any], event_id: str, grace: timedelta, others: int
) -> list[tuple[events.StoredEvent, str]] | None:
    """One applying transaction; None if the event is done already (or gone)."""
    event_type = "?"
    current = event_id  # whose code is running: a failure is charged to it
    try:
        with conn.transaction():
            batch = events.lock_batch(conn, event_id, others, _excluded.ids() if others else ())
            own = next((stored for stored in batch if stored.id == event_id), None)
            if own is None or own.status in ("processed", "ignored"):
                return None
            event_type = own.type
            keys = []
            for stored in batch:
                current = stored.id
                keys += lock_keys(stored.type, stored.payload["data"]["object"])
            current = event_id
            store.lock_objects(conn, keys)
            outcomes = []
            for stored in batch:
                current = stored.id
                structlog.contextvars.bind_contextvars(event_id=stored.id, event_type=stored.type)
                outcomes.append((stored, _run(conn, stored, grace)))
            current = event_id
            structlog.contextvars.bind_contextvars(event_id=event_id, event_type=event_type)
            events.finish_batch(conn, [(stored.id, outcome) for stored, outcome in outcomes], event_id)
    except Exception as exc:
        structlog.contextvars.bind_contextvars(event_id=event_id, event_type=event_type)
        if current != event_id:
            log.info("batch_member_failed", member_id=current, error=f"{type(exc).__name__}: {exc}")
            raise _OtherFailed(current) from exc
        error = f"{type(exc).__name__}: {exc}"
        metrics.EVENTS_FAILED.labels(type=event_type).inc()
        log.warning("event_failed", error=error)
        if not conn.closed:
            try:
                events.fail(conn, event_id, error)
            except psycopg.Error as record_exc:
                log.warning("event_failure_not_recorded", error=str(record_exc))
        raise
    return outcomes


def _run(conn: psycopg.Connection[Any], stored: events.StoredEvent, grace: timedelta) -> str:
    handler = handler_for(stored.type)
    if handler is None:
        return "ignored"
    ctx = context_for(stored.id, stored.payload, replayed=stored.replays > 0, grace=grace)
    return handler(conn, ctx)
