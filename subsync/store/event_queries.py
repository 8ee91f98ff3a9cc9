"""On-call reads of `stripe_events` and `event_replays`: the CLI's lists and the /metrics backlog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


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
    """One event with its payload as text (`payload_text`: the caller parses it, and may fail to), or None."""
    return conn.execute(
        f"SELECT {SUMMARY_COLUMNS}, payload::text AS payload_text FROM stripe_events WHERE id = %s",  # noqa: S608
        (event_id,),
    ).fetchone()


def statuses(conn: psycopg.Connection[Any], event_ids: Sequence[str]) -> dict[str, str]:
    """The status of each stored event among `event_ids` (unknown ids are absent)."""
    rows = conn.execute("SELECT id, status FROM stripe_events WHERE id = ANY(%s)", (list(event_ids),)).fetchall()
    return {r["id"]: r["status"] for r in rows}


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
