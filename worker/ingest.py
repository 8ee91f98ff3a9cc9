"""Store an event and queue it: the one intake path for the receiver, backfill and fetch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from subsync import db, events
from worker.queue import enqueue


@dataclass(frozen=True)
class Ingested:
    new: bool  # a row was created
    queued: bool  # a message was sent or handed to the sender (new, or a failed event reopened)


def store_and_queue(
    pool: ConnectionPool[Any],
    header: events.EventHeader,
    payload_json: str,
    *,
    send: Callable[[list[str]], int] = enqueue,
) -> Ingested:
    """Commit the event row, then queue it. Raises psycopg errors: nothing stored.

    A duplicate of a failed event is reopened and queued again (a resend from
    Stripe's dashboard acts as a replay). Queuing happens after the commit so
    a worker never looks for a row it cannot see; if Redis is down the row
    waits for the outbox sweep.

    Each statement commits on its own (autocommit): one round trip, and the
    row is durable when `insert` returns. A connection found dropped is
    replaced and the statements run again (`db.run`); if the first insert had
    committed, the second sees a duplicate and queues nothing, and the outbox
    sweep queues the event.

    `send` queues the ids: `enqueue` sends them before returning (backfill,
    the CLI); the receiver passes the process's BackgroundSender, so that its
    answer does not wait for Redis.
    """

    def store(conn: psycopg.Connection[Any]) -> tuple[list[str], bool]:
        conn.autocommit = True
        try:
            if events.insert(conn, header, payload_json):
                return [header.id], True
            return events.reopen_failed(conn, [header.id]), False
        finally:
            if not conn.broken:
                conn.autocommit = False

    to_queue, new = db.run(pool, store)
    sent = send(to_queue) if to_queue else 0
    return Ingested(new=new, queued=sent > 0)
