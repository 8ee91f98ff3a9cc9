"""The event store: every read and write of `stripe_events` lives here.

Life of an event row:

    received --(worker claims)--> processing --> processed | ignored
                                     |  ^
                            handler raised, retried by Dramatiq
                                     v  |
                                    failed --(replay / dashboard resend)--> received

A row is `received` from its commit until a worker claims it. The outbox sweep
re-queues rows still `received` or `processing` (a worker killed -9 mid-apply)
after `SWEEP_AFTER`, and `failed` rows whose retry Redis lost; rows a live
worker is applying are row-locked and skipped. A worker applies a few
`received` rows alongside the one it claimed (`lock_batch`), so many rows go
from `received` to `processed` in one step. Applying is idempotent, so a
message queued twice is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# Events not applied after this long are queued again by the outbox sweep.
SWEEP_AFTER = timedelta(seconds=30)
SWEEP_BATCH = 1000
# last_error is for a human: the start of the message is what matters.
MAX_ERROR_CHARS = 4000
STATUSES = ("received", "processing", "processed", "ignored", "failed")


class InvalidPayload(ValueError):
    """The body is not a JSON Stripe event (`id`, `type`, `data.object`)."""


@dataclass(frozen=True)
class EventHeader:
    """The columns we index an event by, parsed once from its JSON."""

    id: str
    type: str
    api_version: str | None
    livemode: bool
    account: str | None
    created: int
    object_id: str | None


def parse_event(event: Any) -> EventHeader:
    """Check that `event` (parsed JSON) has a Stripe event's shape."""
    if not isinstance(event, dict):
        msg = "the body is not a JSON object"
        raise InvalidPayload(msg)
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    if not isinstance(event_id, str) or not event_id:
        msg = "the event has no string 'id'"
        raise InvalidPayload(msg)
    if not isinstance(event_type, str) or not event_type:
        msg = "the event has no string 'type'"
        raise InvalidPayload(msg)
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        msg = "the event has no 'data.object'"
        raise InvalidPayload(msg)
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        msg = "the event has no integer 'created'"
        raise InvalidPayload(msg)
    obj_id = data["object"].get("id")
    account = event.get("account")
    api_version = event.get("api_version")
    return EventHeader(
        id=event_id,
        type=event_type,
        api_version=api_version if isinstance(api_version, str) else None,
        livemode=event.get("livemode") is True,
        account=account if isinstance(account, str) else None,
        created=created,
        object_id=obj_id if isinstance(obj_id, str) else None,
    )


def insert(conn: psycopg.Connection[Any], header: EventHeader, payload_json: str) -> bool:
    """Store the event unless its id is stored already. True if it is new.

    `payload_json` is the body as received; PostgreSQL parses it into jsonb,
    which spares the receiver a Python round trip through json.dumps.
    """
    row = conn.execute(
        """
        INSERT INTO stripe_events (id, type, api_version, livemode, account, created_at, payload, object_id)
        VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), %s::jsonb, %s)
        ON CONFLICT (id) DO NOTHING
        RETURNING 1
        """,
        (
            header.id,
            header.type,
            header.api_version,
            header.livemode,
            header.account,
            header.created,
            payload_json,
            header.object_id,
        ),
    ).fetchone()
    return row is not None


def reopen_failed(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> list[str]:
    """Move failed events back to `received` for another attempt; returns those moved.

    Used by a duplicate delivery of a failed event (a resend from Stripe's
    dashboard) and by `events replay`. Counting it in `replays` makes the
    changes it then applies carry source 'replay'.
    """
    rows = conn.execute(
        """
        UPDATE stripe_events
           SET status = 'received', replays = replays + 1, enqueued_at = now()
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
           SET status = 'received', replays = replays + 1, enqueued_at = now()
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
    " WHERE id = %s AND status IN ('received', 'processing', 'failed')"
    " AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
    " RETURNING 1"
)


def claim(conn: psycopg.Connection[Any], event_id: str) -> bool:
    """Mark the event `processing` and count the attempt, in its own commit.

    Committed before applying so that an attempt killed -9 still shows in
    `attempts` and the row is visibly `processing` for on-call. The commit is
    asynchronous: losing this marker in a PostgreSQL crash costs nothing.
    One statement, with parameters (prepared after a few uses), in autocommit.
    Returns False when there is nothing to do (already processed or ignored).
    """
    if conn.autocommit:  # the worker's connections are (subsync.db.open_pool)
        return conn.execute(_CLAIM, (event_id,)).fetchone() is not None
    conn.autocommit = True
    try:
        return conn.execute(_CLAIM, (event_id,)).fetchone() is not None
    finally:
        conn.autocommit = False


@dataclass(frozen=True)
class StoredEvent:
    id: str
    type: str
    status: str
    payload: dict[str, Any]
    replays: int
    attempts: int


def lock_batch(
    conn: psycopg.Connection[Any], event_id: str, others: int, excluded: Sequence[str] = ()
) -> list[StoredEvent]:
    """Lock `event_id` (waiting for it) and up to `others` more events still `received`.

    The others are the oldest received rows nobody holds (SKIP LOCKED): two
    workers never pick the same one, and a row a worker is applying is passed
    over. Their own messages, when they come, find them applied and skip.
    Oldest received first; `event_id`'s row is among them unless it is gone.
    """
    rows = conn.execute(
        """
        WITH own AS (
            SELECT id, type, status, payload, replays, attempts, received_at FROM stripe_events
             WHERE id = %(id)s FOR UPDATE
        ), others AS (
            SELECT id, type, status, payload, replays, attempts, received_at FROM stripe_events
             WHERE status = 'received' AND id <> %(id)s AND id <> ALL(%(excluded)s)
             ORDER BY received_at LIMIT %(others)s FOR UPDATE SKIP LOCKED
        )
        SELECT id, type, status, payload, replays, attempts FROM (
            SELECT * FROM own UNION ALL SELECT * FROM others
        ) AS batch ORDER BY received_at
        """,
        {"id": event_id, "others": others, "excluded": list(excluded)},
    ).fetchall()
    return [StoredEvent(**row) for row in rows]


def finish_batch(conn: psycopg.Connection[Any], outcomes: Sequence[tuple[str, str]], claimed: str) -> None:
    """Record each (event id, outcome) inside the applying transaction.

    Every event but `claimed` (whose attempt its claim counted) counts its
    attempt here: it was applied alongside, in this one attempt.
    """
    conn.execute(
        """
        UPDATE stripe_events AS e
           SET status = o.status, processed_at = now(), last_error = NULL,
               attempts = e.attempts + (e.id <> %s)::int
          FROM unnest(%s::text[], %s::text[]) AS o(id, status)
         WHERE e.id = o.id
        """,
        (claimed, [event_id for event_id, _ in outcomes], [status for _, status in outcomes]),
    )


def fail(conn: psycopg.Connection[Any], event_id: str, error: str) -> None:
    """Record a failed attempt (after the applying transaction rolled back).

    `enqueued_at` is stamped: the broker holds the retry from now on, and the
    outbox sweep steps in only if that retry never comes (`due_for_sweep`).
    """
    with conn.transaction():
        conn.execute(
            "UPDATE stripe_events SET status = 'failed', last_error = %s, enqueued_at = now()"
            " WHERE id = %s AND status <> 'processed'",
            (error[:MAX_ERROR_CHARS], event_id),
        )


def due_for_sweep(
    conn: psycopg.Connection[Any],
    older_than: timedelta = SWEEP_AFTER,
    limit: int = SWEEP_BATCH,
    *,
    retry_lost_after: timedelta | None = None,
    max_attempts: int = 0,
) -> list[str]:
    """Claim the ids the outbox sweep must queue again, and stamp them.

    Unfinished events (`received`, `processing`) are due `older_than` after
    they were last queued. A `failed` event with attempts left waits for the
    broker's delayed retry, which Redis may have lost (a restart without
    persistence, or a send that failed while Redis was down): it is due only
    when that retry is overdue, `retry_lost_after` after its failure, and
    only while it has fewer than `max_attempts` attempts, so one that used
    them up stays `failed` for on-call.

    SKIP LOCKED passes over rows a worker is applying right now (it holds the
    row lock) and lets several schedulers sweep at once without queuing the
    same event twice in one pass.
    """
    rows = conn.execute(
        """
        UPDATE stripe_events SET enqueued_at = now()
         WHERE id IN (
               SELECT id FROM stripe_events
                WHERE (status IN ('received', 'processing')
                       AND coalesce(enqueued_at, received_at) < now() - %(older_than)s)
                   OR (status = 'failed' AND %(retry_lost_after)s::interval IS NOT NULL
                       AND attempts < %(max_attempts)s
                       AND coalesce(enqueued_at, received_at) < now() - %(retry_lost_after)s::interval)
                ORDER BY received_at
                LIMIT %(limit)s
                  FOR UPDATE SKIP LOCKED)
        RETURNING id
        """,
        {"older_than": older_than, "limit": limit, "retry_lost_after": retry_lost_after, "max_attempts": max_attempts},
    ).fetchall()
    return [r["id"] for r in rows]


def payload_text(event: Mapping[str, Any]) -> str:
    """Serialise an event fetched from Stripe's API for `insert`."""
    return json.dumps(event, separators=(",", ":"))


# --- On-call reads and the replay record (webhooks/cli/events_commands.py) ---


@dataclass(frozen=True)
class EventFilter:
    """Which events an operator means. Times are on `received_at` (when we got them).

    `type` is an exact event type, or a prefix ending in `*` (`invoice.*`).
    """

    status: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    object_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The filter as recorded in `event_replays.filters` (set fields only)."""
        out: dict[str, Any] = {}
        for key in ("status", "type", "since", "until", "object_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _where(f: EventFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if f.status is not None:
        clauses.append("status = %s")
        args.append(f.status)
    if f.type is not None:
        if f.type.endswith("*"):
            clauses.append("starts_with(type, %s)")
            args.append(f.type.rstrip("*"))
        else:
            clauses.append("type = %s")
            args.append(f.type)
    if f.since is not None:
        clauses.append("received_at >= %s")
        args.append(f.since)
    if f.until is not None:
        clauses.append("received_at < %s")
        args.append(f.until)
    if f.object_id is not None:
        clauses.append("object_id = %s")
        args.append(f.object_id)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


SUMMARY_COLUMNS = (
    "id, type, status, attempts, replays, last_error, received_at, created_at, processed_at,"
    " enqueued_at, object_id, api_version, livemode, account"
)


def list_events(conn: psycopg.Connection[Any], f: EventFilter, limit: int) -> list[dict[str, Any]]:
    """Events matching `f`, newest received first (without payloads)."""
    where, args = _where(f)
    return conn.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM stripe_events{where} ORDER BY received_at DESC, id DESC LIMIT %s",  # noqa: S608 - fixed clauses, values bound
        [*args, limit],
    ).fetchall()


def matching_ids(conn: psycopg.Connection[Any], f: EventFilter) -> list[str]:
    """Ids of every event matching `f`, oldest received first (the order to replay them in)."""
    where, args = _where(f)
    rows = conn.execute(
        f"SELECT id FROM stripe_events{where} ORDER BY received_at, id",  # noqa: S608
        args,
    ).fetchall()
    return [r["id"] for r in rows]


def get_event(conn: psycopg.Connection[Any], event_id: str) -> dict[str, Any] | None:
    """One event with its payload, or None."""
    return conn.execute(
        f"SELECT {SUMMARY_COLUMNS}, payload FROM stripe_events WHERE id = %s",  # noqa: S608
        (event_id,),
    ).fetchone()


def statuses(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> dict[str, str]:
    """The status of each stored event among `event_ids` (unknown ids are absent)."""
    rows = conn.execute("SELECT id, status FROM stripe_events WHERE id = ANY(%s)", (list(event_ids),)).fetchall()
    return {r["id"]: r["status"] for r in rows}


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


def replays_of(conn: psycopg.Connection[Any], event_id: str) -> list[dict[str, Any]]:
    """The recorded replays that queued `event_id`, oldest first."""
    return conn.execute(
        "SELECT id, requested_at, requested_by, filters, dry_run FROM event_replays"
        " WHERE %s = ANY(event_ids) ORDER BY requested_at, id",
        (event_id,),
    ).fetchall()


@dataclass(frozen=True)
class Backlog:
    """What /metrics reports about unfinished and failed events."""

    received: int
    processing: int
    failed: int
    oldest_unfinished_at: datetime | None


def backlog(conn: psycopg.Connection[Any]) -> Backlog:
    """Counts read through the partial indexes only: cheap on a table of millions."""
    rows = conn.execute(
        """
        SELECT status, count(*) AS n, min(received_at) AS oldest FROM stripe_events
         WHERE status IN ('received', 'processing') GROUP BY status
        """
    ).fetchall()
    by_status = {r["status"]: r for r in rows}
    failed = conn.execute("SELECT count(*) AS n FROM stripe_events WHERE status = 'failed'").fetchone()
    oldest = [r["oldest"] for r in rows if r["oldest"] is not None]
    return Backlog(
        received=int(by_status.get("received", {}).get("n", 0)),
        processing=int(by_status.get("processing", {}).get("n", 0)),
        failed=int(failed["n"]) if failed else 0,
        oldest_unfinished_at=min(oldest) if oldest else None,
    )
