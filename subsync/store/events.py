"""The write path of `stripe_events` and `event_replays`: intake, claim, finish, fail, sweep, replay.

On-call reads of the same tables are in `event_queries`.

Life of an event row (`claim`, `finish` and `reopen*` are its only writers):

    received --(a worker claims it)--> processing --> processed | ignored
                                          |  ^
                         its handler raised; retry_at set, a delayed retry sent
                                          v  |
                                         failed --(replay / dashboard resend)--> received

A row is `received` from its commit until a worker claims it. The outbox
sweep re-queues rows still `received` or `processing` (a worker killed -9
mid-apply) after `SWEEP_AFTER`, and `failed` rows whose retry Redis lost;
rows a live worker is applying are row-locked and skipped. A failed row
with no `retry_at` stays failed (a permanent error, or its attempts used
up) until someone replays it. Applying is idempotent, so a message queued
twice is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import psycopg
from psycopg.types.json import Jsonb

from subsync.db import RowsStatement, execute_rows
from subsync.envelope import EventHeader

# Events not applied after this long are queued again by the outbox sweep.
SWEEP_AFTER = timedelta(seconds=30)
# A failed event's delayed retry this overdue was lost with Redis's memory.
RETRY_LOST_AFTER = timedelta(minutes=5)
SWEEP_BATCH = 1000
# last_error is for a human: the start of the message is what matters.
MAX_ERROR_CHARS = 4000
Status = Literal["received", "processing", "processed", "ignored", "failed"]
STATUSES: tuple[Status, ...] = get_args(Status)
# What applying an event records: handled, or a type we do not handle.
Outcome = Literal["processed", "ignored"]


# `processed_at` is set for a row stored `ignored`.
_INSERT = RowsStatement(
    head="INSERT INTO stripe_events (id, type, api_version, livemode, account, created_at, payload, object_id,"
    " status, last_error, processed_at) VALUES",
    row="({}, {}, {}, {}, {}, to_timestamp({}), {}::jsonb, {}, {}, {}, CASE WHEN {} THEN now() END)",
    tail="ON CONFLICT (id) DO NOTHING RETURNING id",
)


@dataclass(frozen=True)
class Arrival:
    """An event to store: its columns, the body as received, and whether it is stored `ignored`."""

    header: EventHeader
    payload_json: str
    ignored: bool = False
    reason: str | None = None  # kept in `last_error` of an ignored event


def _insert_row(a: Arrival) -> tuple[Any, ...]:
    h = a.header
    status = "ignored" if a.ignored else "received"
    columns = (h.id, h.type, h.api_version, h.livemode, h.account, h.created, a.payload_json, h.object_id)
    return (*columns, status, a.reason, a.ignored)


def insert_many(conn: psycopg.Connection[Any], arrivals: Sequence[Arrival]) -> set[str]:
    """Store each event whose id is not stored yet, in one statement; returns the ids stored now.

    `payload_json` is the body as received; PostgreSQL parses it into jsonb,
    which spares the receiver a Python round trip through json.dumps. An
    event stored `ignored` (a type the worker does not apply, or of the
    other mode, whose `reason` is kept in `last_error`) is never applied.
    An id given twice is stored once.
    """
    return {event_id for (event_id,) in execute_rows(conn, _INSERT, [_insert_row(a) for a in arrivals])}


def insert(
    conn: psycopg.Connection[Any],
    header: EventHeader,
    payload_json: str,
    *,
    ignored: bool = False,
    reason: str | None = None,
) -> bool:
    """Store the event unless its id is stored already (`insert_many` of one). True if it is new."""
    return header.id in insert_many(conn, [Arrival(header, payload_json, ignored, reason)])


def reopen_failed(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> list[str]:
    """Move failed events back to `received` for another attempt; returns those moved.

    Used by a duplicate delivery of a failed event (a resend from Stripe's
    dashboard) and by `events replay`. Counting it in `replays` makes the
    changes it then applies carry source 'replay'.
    """
    rows = conn.execute(
        """
        UPDATE stripe_events
           SET status = 'received', replays = replays + 1, enqueued_at = now(), retry_at = NULL
         WHERE id = ANY(%s) AND status = 'failed'
        RETURNING id
        """,
        (list(event_ids),),
    ).fetchall()
    return [r["id"] for r in rows]


def reopen(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> list[str]:
    """Queue events again whatever their status (an operator's explicit replay).

    A processed event replayed is applied again through the same idempotent
    path: only what Stripe's snapshot says newer than our state changes.
    """
    rows = conn.execute(
        """
        UPDATE stripe_events
           SET status = 'received', replays = replays + 1, enqueued_at = now(), retry_at = NULL
         WHERE id = ANY(%s) AND status <> 'processing'
        RETURNING id
        """,
        (list(event_ids),),
    ).fetchall()
    return [r["id"] for r in rows]


# set_config(..., true) is SET LOCAL inside the statement: its transaction
# (autocommit: the statement's own) commits without waiting for the WAL
# flush. Being part of the WHERE clause, it runs whenever a row is claimed.
_CLAIM = (
    "UPDATE stripe_events SET status = 'processing', attempts = attempts + 1"
    " WHERE id = ANY(%s) AND status IN ('received', 'processing', 'failed')"
    " AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
    " RETURNING id, type"
)


@dataclass(frozen=True)
class Claimed:
    id: str
    type: str


def claim(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> list[Claimed]:
    """Mark the events `processing` and count their attempt, in a commit of its own; returns those claimed.

    Committed before applying so that an attempt killed -9 still shows in
    `attempts` and the rows are visibly `processing` for on-call and the
    outbox sweep. The commit is asynchronous: losing this marker in a
    PostgreSQL crash costs nothing. Events already processed or ignored are
    left out: there is nothing to do for them.
    """
    if conn.autocommit:  # the worker's connections are (subsync.db.open_pool)
        rows = conn.execute(_CLAIM, (list(event_ids),)).fetchall()
    else:
        conn.autocommit = True
        try:
            rows = conn.execute(_CLAIM, (list(event_ids),)).fetchall()
        finally:
            conn.autocommit = False
    return [Claimed(r["id"], r["type"]) for r in rows]


def payload_texts(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> dict[str, str]:
    """The stored payloads of these events, as text."""
    rows = conn.execute(
        "SELECT id, payload::text AS payload_text FROM stripe_events WHERE id = ANY(%s)", (list(event_ids),)
    ).fetchall()
    return {r["id"]: r["payload_text"] for r in rows}


@dataclass(frozen=True)
class StoredEvent:
    """A claimed event as the worker reads it back: its payload as text, parsed by the worker."""

    id: str
    type: str
    status: Status
    replays: int
    attempts: int
    payload_text: str


def lock_for_apply(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> list[StoredEvent]:
    """Lock the events' rows until the transaction ends; oldest received first.

    A second message for the same event (a redelivery, a sweep) waits here
    for the first to commit, then finds it done. The payload comes back as
    text so that one the worker cannot parse fails alone, not the whole read.
    """
    rows = conn.execute(
        "SELECT id, type, status, replays, attempts, payload::text AS payload_text FROM stripe_events"
        " WHERE id = ANY(%s) ORDER BY received_at, id FOR UPDATE",
        (list(event_ids),),
    ).fetchall()
    return [StoredEvent(**row) for row in rows]


FinalStatus = Literal["processed", "ignored", "failed"]


@dataclass(frozen=True)
class Finished:
    """One event's end of an attempt: applied (processed or ignored), or failed with why and when to retry."""

    id: str
    status: FinalStatus
    error: str | None = None
    retry_at: datetime | None = None  # failed: when its retry is due; None: no retry is coming


def finish(conn: psycopg.Connection[Any], finished: Sequence[Finished]) -> None:
    """Record every event's end of this attempt in one statement (inside the applying transaction, or after it).

    A failed event's `enqueued_at` is stamped and its `retry_at` set: the
    broker holds its retry from now on, and the outbox sweep steps in only
    if that retry never comes (`due_for_sweep`).
    """
    if not finished:
        return
    conn.execute(
        """
        UPDATE stripe_events AS e
           SET status = f.status,
               last_error = f.error,
               retry_at = f.retry_at,
               processed_at = CASE WHEN f.status = 'failed' THEN e.processed_at ELSE now() END,
               enqueued_at = CASE WHEN f.status = 'failed' THEN now() ELSE e.enqueued_at END
          FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) AS f(id, status, error, retry_at)
         WHERE e.id = f.id AND e.status <> 'processed'
        """,
        (
            [f.id for f in finished],
            [f.status for f in finished],
            [None if f.error is None else f.error[:MAX_ERROR_CHARS] for f in finished],
            [f.retry_at for f in finished],
        ),
    )


def due_for_sweep(
    conn: psycopg.Connection[Any],
    older_than: timedelta = SWEEP_AFTER,
    limit: int = SWEEP_BATCH,
    *,
    retry_lost_after: timedelta = RETRY_LOST_AFTER,
) -> list[str]:
    """Claim the ids the outbox sweep must queue again, and stamp them.

    Unfinished events (`received`, `processing`) are due `older_than` after
    they were last queued. A `failed` event whose retry is coming (its
    `retry_at` set) waits for that delayed message in Redis, which Redis may
    have lost (a restart without persistence, or a send that failed while
    Redis was down): it is due once the retry is `retry_lost_after` overdue,
    and the retry sent now is the one it waits for next. One with no retry
    coming (a permanent error, or its attempts used up) stays `failed` for
    on-call.

    SKIP LOCKED passes over rows a worker is applying right now (it holds the
    row lock) and lets several schedulers sweep at once without queuing the
    same event twice in one pass.
    """
    rows = conn.execute(
        """
        UPDATE stripe_events
           SET enqueued_at = now(), retry_at = CASE WHEN status = 'failed' THEN now() ELSE retry_at END
         WHERE id IN (
               SELECT id FROM stripe_events
                WHERE (status IN ('received', 'processing')
                       AND coalesce(enqueued_at, received_at) < now() - %(older_than)s)
                   OR (status = 'failed' AND retry_at < now() - %(retry_lost_after)s::interval)
                ORDER BY received_at
                LIMIT %(limit)s
                  FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        {"older_than": older_than, "limit": limit, "retry_lost_after": retry_lost_after},
    ).fetchall()
    return [r["id"] for r in rows]


def record_replay(
    conn: psycopg.Connection[Any],
    requested_by: str,
    filters: Mapping[str, Any],
    event_ids: Sequence[str],
    *,
    dry_run: bool = False,
) -> int:
    """Write the audit record of one replay (who, when, which events); returns its id."""
    row = conn.execute(
        "INSERT INTO event_replays (requested_by, filters, event_ids, dry_run) VALUES (%s, %s, %s, %s) RETURNING id",
        (requested_by, Jsonb(dict(filters)), list(event_ids), dry_run),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def stored_ids(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> set[str]:
    """Which of `event_ids` are stored already (the backfill ingests the others)."""
    rows = conn.execute("SELECT id FROM stripe_events WHERE id = ANY(%s)", (list(event_ids),)).fetchall()
    return {r["id"] for r in rows}
