"""Concurrent deliveries stored together: one INSERT and one commit for the requests waiting, not one each.

Each commit costs PostgreSQL a WAL flush and the process a round trip; a
statement of many rows costs little more than one. A delivery arriving
while no other is being stored stores itself at once (the leader): at
concurrency 1 nothing waits. Deliveries arriving while the leader's
statement runs wait in line; when it returns, the leader hands the line to
the oldest waiter, which stores up to MAX_ROWS of them in one statement,
its own first, and so on. Each request leads at most once, so none waits
for more than the statement before its own and its own.

Every request is still answered only after its own row is committed, and
each gets its own outcome: a row PostgreSQL refuses for its data fails
alone (the statement is tried again one row at a time), a storage failure
fails the requests whose rows it took, each answered 503.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from subsync import logs
from subsync.intake import Ingested, Stored, is_other_mode, store
from subsync.store.events import Arrival

log = logs.get_logger(__name__)

# Rows per statement: beyond this a statement's cost grows with its rows and
# the requests in it wait longer for their answer.
MAX_ROWS = 32

Store = Callable[[ConnectionPool[Any], Sequence[Arrival]], list[Stored]]


@dataclass
class _Waiting:
    arrival: Arrival
    # Held until the request's outcome is set or it is made the leader.
    ready: Any = field(default_factory=threading.Lock)
    lead: bool = False
    stored: Stored | None = None
    queued: bool = False  # its id was handed to the sender
    error: BaseException | None = None


class GroupCommit:
    """The web process's intake: `submit` stores one delivery, batched with those arriving beside it."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        send: Callable[[list[str]], int],
        *,
        livemode: bool,
        max_rows: int = MAX_ROWS,
        store_rows: Store = store,
    ) -> None:
        self._pool = pool
        self._send = send
        self._livemode = livemode
        self._max_rows = max_rows
        self._store = store_rows
        self._lock = threading.Lock()
        self._line: list[_Waiting] = []
        self._leading = False

    def submit(self, arrival: Arrival) -> Ingested:
        """Store the event (committed when this returns), then hand its id to the sender; raises psycopg errors."""
        me = _Waiting(arrival)
        me.ready.acquire()
        with self._lock:
            self._line.append(me)
            me.lead = not self._leading
            self._leading = True
        if not me.lead:
            me.ready.acquire()  # released by the leader with an outcome, or to make this one lead
        if me.lead:
            self._lead()
        if me.error is not None:
            raise me.error
        assert me.stored is not None  # set by whoever stored the row
        return Ingested(
            new=me.stored.new,
            queued=me.queued,
            other_mode=is_other_mode(arrival.header, self._livemode),
        )

    def _lead(self) -> None:
        """Store the head of the line (this request's own row first), then pass the lead on."""
        with self._lock:
            batch = self._line[: self._max_rows]
            del self._line[: self._max_rows]
        try:
            self._store_batch(batch)
        finally:
            with self._lock:
                successor = self._line[0] if self._line else None
                if successor is None:
                    self._leading = False
                else:
                    successor.lead = True
            # The leader's own outcome is read by its caller after this returns.
            for waiting in batch[1:]:
                waiting.ready.release()
            if successor is not None:
                successor.ready.release()

    def _store_batch(self, batch: list[_Waiting]) -> None:
        try:
            self._outcomes(batch, self._store(self._pool, [w.arrival for w in batch]))
        except psycopg.Error as exc:
            # The server refused the statement: if for one row's data, storing
            # each row alone tells which. Without an answer from the server
            # (no connection) every row of the statement failed alike.
            if len(batch) == 1 or exc.sqlstate is None:
                for waiting in batch:
                    waiting.error = exc
                return
            for waiting in batch:
                self._store_batch([waiting])
        except BaseException as exc:  # a request waiting here must get an answer, whatever happened
            for waiting in batch:
                waiting.error = exc
            raise

    def _outcomes(self, batch: list[_Waiting], stored: list[Stored]) -> None:
        for waiting, outcome in zip(batch, stored, strict=True):
            waiting.stored = outcome
        to_queue = [w for w in batch if w.stored is not None and w.stored.to_queue]
        if to_queue:
            try:
                taken = self._send([w.arrival.header.id for w in to_queue])
            except Exception:  # the rows are committed: answer them; the outbox sweep queues them
                log.exception("send_failed", events=len(to_queue))
                taken = 0
            for waiting in to_queue[:taken]:
                waiting.queued = True
