"""Store an event and queue it: the one intake path for the receiver, backfill and fetch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from subsync import db, event_types
from subsync.envelope import EventHeader
from subsync.store import events


@dataclass(frozen=True)
class Ingested:
    new: bool  # a row was created
    queued: bool  # a message was sent or handed to the sender (new, or a failed event reopened)
    other_mode: bool = False  # stored ignored: a live event in a test deployment, or the reverse


def mode_name(livemode: bool) -> str:
    return "live" if livemode else "test"


def other_mode_reason(event_livemode: bool) -> str:
    """`last_error` of an event of the other mode (stored, never applied)."""
    event, ours = mode_name(event_livemode), mode_name(not event_livemode)
    return f"ignored: a {event}-mode event, and this deployment is in {ours} mode"


def is_other_mode(header: EventHeader, livemode: bool) -> bool:
    """A live event in a test deployment, or the reverse: stored ignored, never applied."""
    return header.livemode != livemode


def arrival(header: EventHeader, payload_json: str, *, livemode: bool) -> events.Arrival:
    """The row an event is stored as in a deployment of mode `livemode`.

    An event of the other mode is stored `ignored`, with the reason, and
    never queued; so is an event of a type the worker does not apply
    (subsync.event_types.is_applied).
    """
    other_mode = is_other_mode(header, livemode)
    reason = other_mode_reason(header.livemode) if other_mode else None
    # Queuing an event only for the worker to ignore it would cost a message
    # each way for nothing; a good share of a real account's events are types
    # subsync does not apply.
    ignored = other_mode or not event_types.is_applied(header.type)
    return events.Arrival(header, payload_json, ignored=ignored, reason=reason)


@dataclass(frozen=True)
class Stored:
    new: bool  # a row was created
    to_queue: bool  # new and applied, or a failed event reopened: its id is to be queued


def store(pool: ConnectionPool[Any], arrivals: Sequence[events.Arrival]) -> list[Stored]:
    """Commit the events' rows, in one statement; what became of each, in order. Raises psycopg errors: nothing stored.

    A duplicate of a failed event is reopened (a resend from Stripe's
    dashboard acts as a replay). An id given twice is new (or reopened)
    only the first time.

    Each statement commits on its own (autocommit): one round trip, and the
    rows are durable when it returns. A connection found dropped is
    replaced and the statements run again (`db.run`); if the first insert
    had committed, the second sees duplicates and queues nothing, and the
    outbox sweep queues those events.
    """

    def work(conn: psycopg.Connection[Any]) -> tuple[set[str], set[str]]:
        conn.autocommit = True
        try:
            created = events.insert_many(conn, arrivals)
            again = [a.header.id for a in arrivals if not a.ignored and a.header.id not in created]
            return created, set(events.reopen_failed(conn, again)) if again else set()
        finally:
            if not conn.broken:
                conn.autocommit = False

    created, reopened = db.run(pool, work)
    seen: set[str] = set()
    results = []
    for a in arrivals:
        event_id = a.header.id
        first = event_id not in seen
        seen.add(event_id)
        new = first and event_id in created
        results.append(Stored(new=new, to_queue=first and ((new and not a.ignored) or event_id in reopened)))
    return results


def store_and_queue(
    pool: ConnectionPool[Any],
    header: EventHeader,
    payload_json: str,
    *,
    send: Callable[[list[str]], int],
    livemode: bool,
) -> Ingested:
    """Commit the event row (`store`), then queue it (`send`). Raises psycopg errors: nothing stored.

    Queuing happens after the commit so a worker never looks for a row it
    cannot see; if Redis is down the row waits for the outbox sweep.
    `EventQueue.send` sends before returning (backfill, fetch); the
    receiver stores concurrent deliveries together (webhooks.group_commit).
    """
    a = arrival(header, payload_json, livemode=livemode)
    [stored] = store(pool, [a])
    sent = send([header.id]) if stored.to_queue else 0
    return Ingested(new=stored.new, queued=sent > 0, other_mode=is_other_mode(header, livemode))
