"""Store an event and queue it: the one intake path for the receiver, backfill and fetch."""

from __future__ import annotations

from collections.abc import Callable
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


def store_and_queue(
    pool: ConnectionPool[Any],
    header: EventHeader,
    payload_json: str,
    *,
    send: Callable[[list[str]], int],
    livemode: bool,
) -> Ingested:
    """Commit the event row, then queue it. Raises psycopg errors: nothing stored.

    A deployment is in one mode (`livemode`): an event of the other one is
    stored `ignored`, with the reason, and never queued; so is an event of a
    type the worker does not apply (subsync.event_types.is_applied).

    A duplicate of a failed event is reopened and queued again (a resend from
    Stripe's dashboard acts as a replay). Queuing happens after the commit so
    a worker never looks for a row it cannot see; if Redis is down the row
    waits for the outbox sweep.

    Each statement commits on its own (autocommit): one round trip, and the
    row is durable when `insert` returns. A connection found dropped is
    replaced and the statements run again (`db.run`); if the first insert had
    committed, the second sees a duplicate and queues nothing, and the outbox
    sweep queues the event.

    `send` queues the ids: `EventQueue.send` sends them before returning
    (backfill, fetch); the receiver passes its process's BackgroundSender,
    so that its answer does not wait for Redis.
    """

    other_mode = header.livemode != livemode
    reason = other_mode_reason(header.livemode) if other_mode else None
    # Queuing an event only for the worker to ignore it would cost a message
    # each way for nothing; a good share of a real account's events are types
    # subsync does not apply.
    ignored = other_mode or not event_types.is_applied(header.type)

    def store(conn: psycopg.Connection[Any]) -> tuple[list[str], bool]:
        conn.autocommit = True
        try:
            if events.insert(conn, header, payload_json, ignored=ignored, reason=reason):
                return ([] if ignored else [header.id]), True
            return ([] if ignored else events.reopen_failed(conn, [header.id])), False
        finally:
            if not conn.broken:
                conn.autocommit = False

    to_queue, new = db.run(pool, store)
    sent = send(to_queue) if to_queue else 0
    return Ingested(new=new, queued=sent > 0, other_mode=other_mode)
