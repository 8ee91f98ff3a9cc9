"""Queue stored events for the worker. Callers commit the event rows first."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from subsync import logs
from worker.actors import process_event

log = logs.get_logger(__name__)

# After a failed send, stop trying for a while: during a Redis outage every
# webhook would otherwise wait for the client's connect timeout and retries
# before answering. The rows are committed; the outbox sweep queues them.
BROKER_BACKOFF_S = 5.0

_down_until = 0.0
_lock = threading.Lock()


def broker_resting() -> bool:
    """True while sends are skipped after a recent failure."""
    return time.monotonic() < _down_until


def close_breaker() -> None:
    """Send again at once (the broker is known to be back)."""
    global _down_until  # noqa: PLW0603 - one breaker per process
    with _lock:
        _down_until = 0.0


def enqueue(event_ids: Iterable[str], *, always_try: bool = False) -> int:
    """Send one message per id; returns how many were sent.

    Never raises for a broker failure: the rows are committed, so the outbox
    sweep sends what could not be sent now. A message sent twice is harmless.
    The sweep passes `always_try`: it is the recovery path, it must not wait
    for a breaker a webhook opened.
    """
    global _down_until  # noqa: PLW0603 - one breaker per process
    if broker_resting() and not always_try:
        return 0
    sent = 0
    for event_id in event_ids:
        try:
            process_event.send(event_id)
        except Exception as exc:  # noqa: BLE001 - Redis down must not fail the caller
            with _lock:
                _down_until = time.monotonic() + BROKER_BACKOFF_S
            log.warning(
                "enqueue_failed",
                event_id=event_id,
                error=str(exc),
                error_type=type(exc).__name__,
                retry_after_s=BROKER_BACKOFF_S,
            )
            return sent
        sent += 1
    if always_try and sent:
        close_breaker()
    return sent


# The receiver's ids wait here for the sender thread. Bounded: at the send
# rate a full backlog means Redis is stalled, and the ids it cannot take are
# committed rows the outbox sweep queues, like any send that failed.
SEND_BACKLOG = 10_000
SEND_BATCH = 100  # ids per enqueue() call


class BackgroundSender:
    """Sends event ids from one daemon thread per process, so a webhook's answer never waits for Redis.

    The row is committed before its id is handed over: an id lost here (the
    process killed, the backlog full, Redis down) is a `received` row the
    outbox sweep queues after SWEEP_AFTER. gunicorn's worker_exit hook
    flushes what is left on a graceful stop.
    """

    def __init__(self, send: Callable[[list[str]], int] = enqueue, limit: int = SEND_BACKLOG) -> None:
        self._send = send
        self._limit = limit
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
        # a fork, and gunicorn forks its workers.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._ids = queue.Queue(maxsize=self._limit)
                threading.Thread(target=self._run, args=(self._ids,), name="subsync-sender", daemon=True).start()
                self._pid = os.getpid()

    def _run(self, ids: queue.Queue[str]) -> None:
        while True:
            batch = [ids.get()]
            while len(batch) < SEND_BATCH:
                try:
                    batch.append(ids.get_nowait())
                except queue.Empty:
                    break
            try:
                self._send(batch)
            except Exception:  # the thread must outlive a bug; the sweep has the rows
                log.exception("send_failed", events=len(batch))
            finally:
                for _ in batch:
                    ids.task_done()


sender = BackgroundSender()
