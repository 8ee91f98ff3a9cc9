"""Queue stored events for the worker. Callers commit the event rows first."""

from __future__ import annotations

from collections.abc import Iterable

from subsync import logs

log = logs.get_logger(__name__)


def enqueue(event_ids: Iterable[str]) -> int:
    """Send one message per id; returns how many were sent.

    Never raises for a broker failure: the rows are committed, so the outbox
    sweep sends what could not be sent now. A message sent twice is harmless.
    """
    from worker.actors import process_event  # noqa: PLC0415 - importing sets up the broker

    sent = 0
    for event_id in event_ids:
        try:
            process_event.send(event_id)
        except Exception as exc:  # noqa: BLE001 - Redis down must not fail the caller
            log.warning("enqueue_failed", event_id=event_id, error=str(exc), error_type=type(exc).__name__)
            return sent
        sent += 1
    return sent
