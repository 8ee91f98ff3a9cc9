"""Queue stored events for the worker. Callers commit the event rows first.

`EventQueue` sends by actor name through this process's broker, so a
sender loads none of the worker's code; a breaker stops it trying a broker
that just failed. `BackgroundSender` is the web process's: a thread that
sends after the answer, so an ack never waits for Redis.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from dramatiq.brokers.redis import RedisBroker

from subsync import logs
from subsync.broker import MAX_IDS_PER_MESSAGE, apply_message

log = logs.get_logger(__name__)

# After a failed send, stop trying for a while: during a Redis outage every
# webhook would otherwise wait for the client's connect timeout and retries
# before answering. The rows are committed; the outbox sweep queues them.
BROKER_BACKOFF_S = 5.0


class EventQueue:
    """Sends event ids to the apply actor; one per process, shared by its threads."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._down_until = 0.0
        self._lock = threading.Lock()

    def resting(self) -> bool:
        """True while sends are skipped after a recent failure."""
        return time.monotonic() < self._down_until

    def close_breaker(self) -> None:
        """Send again at once (the broker is known to be back)."""
        with self._lock:
            self._down_until = 0.0

    def send(self, event_ids: Iterable[str], *, always_try: bool = False) -> int:
        """Send the ids, up to MAX_IDS_PER_MESSAGE per message, in order; returns how many ids were sent.

        Never raises for a broker failure: the rows are committed, so the
        outbox sweep sends what could not be sent now. A message sent twice
        is harmless. The sweep passes `always_try`: it is the recovery path,
        it must not wait for a breaker a webhook opened.
        """
        if self.resting() and not always_try:
            return 0
        ids = list(event_ids)
        sent = 0
        for start in range(0, len(ids), MAX_IDS_PER_MESSAGE):
            chunk = ids[start : start + MAX_IDS_PER_MESSAGE]
            if not self._enqueue(chunk):
                return sent
            sent += len(chunk)
        if always_try and sent:
            self.close_breaker()
        return sent

    def send_later(self, event_id: str, delay_ms: int) -> bool:
        """Send a failed event's retry, alone, after `delay_ms`; False if the broker refused (the sweep has it)."""
        return self._enqueue([event_id], delay_ms=delay_ms)

    def _enqueue(self, event_ids: list[str], *, delay_ms: int | None = None) -> bool:
        try:
            self.broker.enqueue(apply_message(event_ids), delay=delay_ms)
        except Exception as exc:  # noqa: BLE001 - Redis down must not fail the caller
            with self._lock:
                self._down_until = time.monotonic() + BROKER_BACKOFF_S
            log.warning(
                "enqueue_failed",
                events=len(event_ids),
                first_event_id=event_ids[0],
                error=str(exc),
                error_type=type(exc).__name__,
                retry_after_s=BROKER_BACKOFF_S,
            )
            return False
        return True


# The receiver's ids wait here for the sender thread. Bounded: at the send
# rate a full backlog means Redis is stalled, and the ids it cannot take are
# committed rows the outbox sweep queues, like any send that failed.
SEND_BACKLOG = 10_000
SEND_BATCH = MAX_IDS_PER_MESSAGE  # ids per send() call: one message
# A message costs the web process, Redis and the worker about the same
# whatever it carries. Under concurrent deliveries the sender waits this long
# for a message to fill; a lone delivery is sent at once. The wait delays
# only the apply, never an answer; long enough for a message to fill at a
# few hundred deliveries a second per process.
LINGER_S = 0.05

_senders: list[BackgroundSender] = []


def flush_senders(timeout: float) -> bool:
    """Wait for every sender of this process (on a graceful stop); False if one did not finish in time."""
    deadline = time.monotonic() + timeout
    return all(sender.flush(max(0.0, deadline - time.monotonic())) for sender in list(_senders))


class BackgroundSender:
    """Sends event ids from one daemon thread per process, so a webhook's answer never waits for Redis.

    The row is committed before its id is handed over: an id lost here (the
    process killed, the backlog full, Redis down) is a `received` row the
    outbox sweep queues after SWEEP_AFTER. A normal exit of the process
    sends what is left first (`flush_senders`, also run at exit).
    """

    EXIT_FLUSH_S = 5.0

    def __init__(self, send: Callable[[list[str]], int], limit: int = SEND_BACKLOG, linger_s: float = LINGER_S) -> None:
        self._send = send
        self._limit = limit
        self._linger_s = linger_s
        self._ids: queue.Queue[str] = queue.Queue(maxsize=limit)
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, event_ids: Sequence[str]) -> int:
        """Hand the ids over without waiting; returns how many were taken."""
        self._running()
        taken = 0
        for event_id in event_ids:
            try:
                self._ids.put_nowait(event_id)
            except queue.Full:
                log.warning("send_backlog_full", event_id=event_id, backlog=self._limit)
                break
            taken += 1
        return taken

    def flush(self, timeout: float) -> bool:
        """Wait until every id handed over was sent (or given up to the sweep); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._ids.all_tasks_done:
            while self._ids.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._ids.all_tasks_done.wait(remaining)
        return True

    def _running(self) -> None:
        # Started by the first submit in each process: a thread does not survive
        # a fork, and web servers fork their workers.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._ids = queue.Queue(maxsize=self._limit)
                threading.Thread(target=self._run, args=(self._ids,), name="subsync-sender", daemon=True).start()
                if self not in _senders:
                    _senders.append(self)
                    atexit.register(self.flush, self.EXIT_FLUSH_S)
                self._pid = os.getpid()

    def _run(self, ids: queue.Queue[str]) -> None:
        concurrent = False
        while True:
            batch = [ids.get()]
            _take(ids, batch, until=None)
            # Deliveries are concurrent when ids pile up while one is sent,
            # and stay so while messages fill: then a message waits to fill.
            # A delivery that finds the sender idle (concurrency 1, a quiet
            # moment) goes alone, at once.
            if concurrent or len(batch) > 1:
                _take(ids, batch, until=time.monotonic() + self._linger_s)
            concurrent = len(batch) > 1
            try:
                self._send(batch)
            except Exception:  # the thread must outlive a bug; the sweep has the rows
                log.exception("send_failed", events=len(batch))
            finally:
                for _ in batch:
                    ids.task_done()


def _take(ids: queue.Queue[str], batch: list[str], *, until: float | None) -> None:
    """Add waiting ids to `batch` up to SEND_BATCH; with `until`, also those arriving before it."""
    while len(batch) < SEND_BATCH:
        left = 0.0 if until is None else until - time.monotonic()
        try:
            batch.append(ids.get(timeout=left) if left > 0 else ids.get_nowait())
        except queue.Empty:
            return
