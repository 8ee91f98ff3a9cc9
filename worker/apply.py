"""Apply the stored events one message names, each exactly once, each failure its own.

1. claim: mark the message's events `processing` and count the attempt (a
   commit of its own, so an attempt killed -9 still shows);
2. one transaction: lock their rows (oldest received first; events a
   concurrent message finished meanwhile are skipped), read each payload,
   take every advisory lock the handlers need in one order, run the
   handlers, each over a group of events of its kind that share no lock
   (worker.waves: a few statements per group, not per event), record every
   outcome in one statement, commit. A crash anywhere in it rolls
   everything back: the rows stay `processing` for the outbox sweep;
3. if a handler raises, the transaction is rolled back and run again with
   each event alone in a savepoint of its own: the event that raises is rolled
   back to its savepoint and recorded `failed` with a one-line reason in
   the same commit as the others, so it never fails a neighbour. A transient failure gets a retry of
   its own, a delayed message (Dramatiq's backoff over the event's
   attempts) sent after the commit; a permanent one (a payload that cannot
   be read back, an object that cannot be parsed) none;
4. if the transaction as a whole fails (the database went away, a lock
   timed out), every claimed event is recorded failed with a retry, or, if
   not even that can be written, the error goes to Dramatiq, which retries
   the message.

`finish` in the event store is the one writer of the outcome, `claim` of
the attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog
from dramatiq.common import compute_backoff
from psycopg_pool import ConnectionPool

from subsync import db, event_types, logs, metrics
from subsync.broker import MAX_BACKOFF_MS, MAX_RETRIES, MIN_BACKOFF_MS
from subsync.envelope import InvalidPayload, loads
from subsync.intake import other_mode_reason
from subsync.store import events, locks
from subsync.stripe_api import StripeApi
from subsync.stripe_objects import MalformedObject
from worker import prefetch, thin, waves
from worker.handlers import HANDLERS, Context, context_for, lock_keys

log = logs.get_logger(__name__)

# The same payload fails the same way on every attempt: no retry.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (InvalidPayload, MalformedObject)


@dataclass(frozen=True)
class Result:
    """One event's end of this attempt, and the delay of its retry if one is due."""

    id: str
    type: str
    status: events.FinalStatus
    error: str | None = None  # for last_error (the database), never for a log line
    error_type: str | None = None
    retry_in_ms: int | None = None


def apply_events(
    pool: ConnectionPool[Any],
    event_ids: list[str],
    *,
    grace: timedelta,
    livemode: bool = False,
    api: StripeApi | None = None,
) -> list[Result]:
    """Apply the stored events `event_ids` (module docstring); returns what became of each one claimed.

    `livemode` is the deployment's mode: an event of the other mode (a
    replay of one stored ignored) is ignored again, never applied. `api`
    fetches what an event needs from Stripe (worker.prefetch: the objects
    thin events point at, and the like), before the transaction, so that
    no lock is held while Stripe answers.
    """
    started = time.perf_counter()
    claimed = db.run(pool, lambda conn: events.claim(conn, event_ids))
    if not claimed:
        log.debug("events_skipped", events=len(event_ids), reason="already applied or unknown")
        return []
    ids = [c.id for c in claimed]
    fetched = _prefetch(pool, api, [c.id for c in claimed if prefetch.needs_fetch(c.type)])
    try:
        # Safe to run twice (db.run, after a dropped connection): the rows
        # a first run committed are `processed` and skipped.
        results = db.run(pool, lambda conn: _apply_batch(conn, ids, grace, livemode, fetched))
    except Exception as exc:  # noqa: BLE001 - whatever failed the batch is recorded against its events
        results = _record_batch_failure(pool, ids, exc)
    _report(results, time.perf_counter() - started)
    return results


# The event to apply, completed from Stripe's API; None for a thin event of a
# type we do not handle; or why it could not be fetched.
Fetched = dict[str, Any] | None | Exception


def _prefetch(pool: ConnectionPool[Any], api: StripeApi | None, event_ids: list[str]) -> dict[str, Fetched]:
    if not event_ids:
        return {}
    with pool.connection() as conn:
        texts = events.payload_texts(conn, event_ids)
    fetched: dict[str, Fetched] = {}
    for event_id, text in texts.items():
        try:
            fetched[event_id] = prefetch.event_to_apply(api, loads(text), pool)
        except Exception as exc:  # noqa: BLE001 - charged to this event alone, in the transaction
            fetched[event_id] = exc
    return fetched


class _HandlerRaised(Exception):
    """A handler raised in a batch applied without savepoints: it is applied again, each event in its own."""


def _apply_batch(
    conn: psycopg.Connection[Any], event_ids: list[str], grace: timedelta, livemode: bool, fetched: dict[str, Fetched]
) -> list[Result]:
    """Every event in one transaction; each in a savepoint only once one of them has raised.

    A savepoint costs two round trips per event, and handlers rarely raise:
    the batch is first applied without them, and if a handler raises, it is
    rolled back whole and applied again with one savepoint per event, where
    the failure is charged to that event alone.
    """
    try:
        return _apply(conn, event_ids, grace, livemode, fetched, isolate=False)
    except _HandlerRaised:
        return _apply(conn, event_ids, grace, livemode, fetched, isolate=True)


def _apply(
    conn: psycopg.Connection[Any],
    event_ids: list[str],
    grace: timedelta,
    livemode: bool,
    fetched: dict[str, Fetched],
    *,
    isolate: bool,
) -> list[Result]:
    with conn.transaction():
        stored = [s for s in events.lock_for_apply(conn, event_ids) if s.status == "processing"]
        results: list[Result] = []
        ready: list[tuple[events.StoredEvent, dict[str, Any]]] = []
        for event in stored:
            try:
                payload = _payload(event, fetched)
            except Exception as exc:  # noqa: BLE001 - an unreadable payload or a failed fetch fails this event alone
                results.append(_failed(event.id, event.type, event.attempts, exc))
                continue
            if payload is None:  # a thin event of a type we do not handle
                results.append(Result(event.id, event.type, "ignored"))
                continue
            if isinstance(payload, dict) and (payload.get("livemode") is True) != livemode:
                results.append(Result(event.id, event.type, "ignored", other_mode_reason(not livemode)))
                continue
            ready.append((event, payload))
        keys = [lock_keys(payload.get("type", ""), _object(payload)) for _, payload in ready]
        locks.lock_objects(conn, [key for event_keys in keys for key in event_keys])
        runnable: list[_Runnable] = []
        for (event, payload), event_keys in zip(ready, keys, strict=True):
            kind = event_types.kind_of(payload.get("type") or event.type)
            if kind is None:
                results.append(Result(event.id, event.type, "ignored"))
                continue
            try:
                ctx = _context(event, payload, grace)
            except Exception as exc:  # noqa: BLE001 - a snapshot a handler cannot be given fails this event alone
                results.append(_failed(event.id, event.type, event.attempts, exc))
                continue
            runnable.append(_Runnable(event, kind, ctx, event_keys))
        if isolate:
            for one in runnable:
                try:
                    with conn.transaction():  # a savepoint: a failure rolls back this event only
                        results.extend(_run(conn, [one]))
                except Exception as exc:
                    if conn.broken:
                        raise
                    results.append(_failed(one.event.id, one.event.type, one.event.attempts, exc))
        else:
            for group in waves.plan_groups(runnable, lambda one: one.keys, _group_key):
                try:
                    results.extend(_run(conn, group))
                except Exception as exc:
                    if conn.broken:
                        raise
                    raise _HandlerRaised from exc
        events.finish(conn, [_finished(r) for r in results])
    return results


def _payload(event: events.StoredEvent, fetched: dict[str, Fetched]) -> dict[str, Any] | None:
    """The snapshot event to apply: the stored one, or the one fetched for it (worker.prefetch)."""
    if event.id not in fetched:
        payload: dict[str, Any] = loads(event.payload_text)
        return payload
    value = fetched[event.id]
    if isinstance(value, Exception):
        raise value
    return value


def _object(payload: Any) -> dict[str, Any]:
    data = payload.get("data") if isinstance(payload, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


@dataclass(frozen=True)
class _Runnable:
    """An event a handler applies: its row, its kind, what the handler is given and the locks it needs."""

    event: events.StoredEvent
    kind: event_types.Kind
    ctx: Context
    keys: list[str]


def _group_key(runnable: _Runnable) -> tuple[str, str]:
    return runnable.kind, runnable.ctx.source


def _context(event: events.StoredEvent, payload: dict[str, Any], grace: timedelta) -> Context:
    return context_for(event.id, payload, replayed=event.replays > 0, grace=grace, fetched=thin.is_thin(event.type))


def _run(conn: psycopg.Connection[Any], group: list[_Runnable]) -> list[Result]:
    """One handler over a group of its events (worker.waves): a result for each."""
    if len(group) == 1:  # the log lines a handler writes name its event
        structlog.contextvars.bind_contextvars(event_id=group[0].event.id, event_type=group[0].event.type)
    else:
        structlog.contextvars.unbind_contextvars("event_id", "event_type")
    outcomes = HANDLERS[group[0].kind](conn, [one.ctx for one in group])
    return [Result(one.event.id, one.event.type, outcome) for one, outcome in zip(group, outcomes, strict=True)]


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line: the reason on-call reads in `last_error`."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failed(event_id: str, event_type: str, attempts: int, exc: BaseException) -> Result:
    retry_in_ms = None
    if not isinstance(exc, PERMANENT_ERRORS) and attempts <= MAX_RETRIES:
        _, retry_in_ms = compute_backoff(attempts - 1, factor=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
    return Result(event_id, event_type, "failed", one_line(exc), type(exc).__name__, retry_in_ms)


def _finished(result: Result) -> events.Finished:
    retry_at = None
    if result.retry_in_ms is not None:
        retry_at = datetime.now(UTC) + timedelta(milliseconds=result.retry_in_ms)
    return events.Finished(result.id, result.status, result.error, retry_at)


def _record_batch_failure(pool: ConnectionPool[Any], event_ids: list[str], exc: Exception) -> list[Result]:
    """The whole transaction failed: record every claimed event failed, with a retry. Raises if it cannot."""
    log.warning("batch_failed", events=len(event_ids), exc_info=exc)

    def record(conn: psycopg.Connection[Any]) -> list[Result]:
        with conn.transaction():
            stored = events.lock_for_apply(conn, event_ids)
            results = [_failed(s.id, s.type, s.attempts, exc) for s in stored if s.status == "processing"]
            events.finish(conn, [_finished(r) for r in results])
        return results

    try:
        return db.run(pool, record)
    except (psycopg.Error, OSError) as record_exc:
        # Not even that: Dramatiq retries the message; the rows stay
        # `processing` for the outbox sweep meanwhile.
        raise record_exc from exc


def _report(results: list[Result], seconds: float) -> None:
    duration_ms = round(seconds * 1000, 2)
    for result in results:
        structlog.contextvars.bind_contextvars(event_id=result.id, event_type=result.type)
        if result.status == "failed":
            metrics.EVENTS_FAILED.labels(type=result.type).inc()
            log.warning(
                "event_failed",
                error_type=result.error_type,
                retry_in_ms=result.retry_in_ms,
                permanent=result.retry_in_ms is None,
                batch=len(results),
            )
        else:
            metrics.EVENTS_APPLIED.labels(type=result.type, outcome=result.status).inc()
            log.info("event_applied", outcome=result.status, duration_ms=duration_ms, batch=len(results))
    structlog.contextvars.unbind_contextvars("event_id", "event_type")
