"""The Dramatiq actor. It takes ids, never payloads: the rows are the truth."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from subsync import config, db
from subsync.broker import APPLY_ACTOR, MAX_BACKOFF_MS, MAX_RETRIES, MIN_BACKOFF_MS, QUEUE
from subsync.queue import EventQueue
from subsync.stripe_api import make_api
from worker import apply


def declare(broker: RedisBroker, settings: config.Settings) -> dramatiq.Actor[Any, None]:
    """Declare the apply actor on `broker`; senders address it by name (subsync.broker.apply_message)."""
    retries = EventQueue(broker)
    livemode = settings.require_mode()
    # Thin events are applied by fetching their object: without a key they fail, and are retried.
    api = make_api(settings) if settings.stripe_api_key else None

    def apply_events(event_ids: list[str]) -> None:
        results = apply.apply_events(db.pool(), event_ids, grace=settings.grace_period, livemode=livemode, api=api)
        for result in results:
            if result.retry_in_ms is not None:
                # After the commit that recorded the failure; if Redis refuses
                # it now, the outbox sweep sends it once it is overdue.
                retries.send_later(result.id, result.retry_in_ms)

    declare_on = dramatiq.actor(
        actor_name=APPLY_ACTOR,
        queue_name=QUEUE,
        broker=broker,
        # Dramatiq's own retries cover a message that could not even record
        # its events' failure (the database down); an event's retries are
        # its own messages.
        max_retries=MAX_RETRIES,
        min_backoff=MIN_BACKOFF_MS,
        max_backoff=MAX_BACKOFF_MS,
    )
    return declare_on(apply_events)
