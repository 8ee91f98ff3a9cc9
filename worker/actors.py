"""The Dramatiq actors. They take ids, never payloads: the row is the truth."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from subsync import db
from subsync.stripe_objects import MalformedObject
from worker import apply
from worker.broker import settings

QUEUE = "stripe_events"
# Transient failures (a lock timeout, a database restart) heal within minutes;
# a bug needs a deploy and a replay. About 2.5 h of retries, then the event
# stays `failed` for on-call (`events list --status failed`).
MAX_RETRIES = 10
MIN_BACKOFF_MS = 10_000
MAX_BACKOFF_MS = 30 * 60_000


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=MAX_RETRIES,
    min_backoff=MIN_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
    # A payload we cannot parse fails the same way every time: no retries.
    throws=(MalformedObject,),
)
def process_event(event_id: str) -> None:
    message = CurrentMessage.get_current_message()
    apply.apply_event(
        db.pool(),
        event_id,
        grace=settings.grace_period,
        others=apply.BATCH_OTHERS,
        sent_at_ms=None if message is None else message.message_timestamp,
    )
