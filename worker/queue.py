"""Queue stored events for the worker. Callers commit the event rows first."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

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
