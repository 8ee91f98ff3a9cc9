"""The Dramatiq broker on Redis, and the address of the apply actor: what a process needs to send.

No broker exists until a process builds one from its Settings
(`make_broker`): the web process and the scheduler only send, by actor name
(`apply_message`), so they never load the worker's code; the worker process
adds its middleware and declares the actor (worker.app). Delivery is
at-least-once: PostgreSQL, not Redis, is what makes an event applied exactly
once (subsync.store.events).
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from subsync import config

QUEUE = "stripe_events"
APPLY_ACTOR = "apply_events"
# Ids one message carries at most: the worker applies them in one
# transaction. Enough to share the fixed cost of a message and a commit
# across a burst; few enough that the transaction stays short.
MAX_IDS_PER_MESSAGE = 32
# An event's retries (each one its own delayed message). Transient failures
# (a lock timeout, a database restart) heal within minutes; a bug needs a
# deploy and a replay. About 2.5 h of retries, then the event stays `failed`
# for on-call.
MAX_RETRIES = 10
MIN_BACKOFF_MS = 10_000
MAX_BACKOFF_MS = 30 * 60_000

# A sender must not hang on a dead Redis: the event is already stored, and
# the outbox sweep queues it later. redis-py's default retries for ~30 s.
REDIS_CONNECT_TIMEOUT_S = 1.0
REDIS_SOCKET_TIMEOUT_S = 5.0
REDIS_RETRIES = 2
# Redis requeues the messages of a worker killed -9 only after this timeout
# and a random maintenance pass; the outbox sweep in PostgreSQL is the real
# safety net, this only makes Redis's own recovery less slow.
HEARTBEAT_TIMEOUT_MS = 60_000
MAINTENANCE_CHANCE = 20_000  # per million dispatch calls


def make_broker(settings: config.Settings) -> RedisBroker:
    """A Redis broker for this process; it connects on first use."""
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), REDIS_RETRIES),
    )
    return RedisBroker(  # type: ignore[no-untyped-call]  # dramatiq's constructor has no annotations
        client=client,
        namespace=settings.queue_namespace,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )


def apply_message(event_ids: list[str]) -> dramatiq.Message[None]:
    """The message that asks a worker to apply these stored events, in one transaction."""
    return dramatiq.Message(queue_name=QUEUE, actor_name=APPLY_ACTOR, args=(event_ids,), kwargs={}, options={})


def queue_keys(namespace: str) -> tuple[str, str]:
    """The Redis lists of the apply queue: ready messages, and retries waiting for their backoff."""
    key = f"{namespace}:{QUEUE}"
    return key, f"{key}.DQ"
