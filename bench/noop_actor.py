"""The floor of the pipeline bench: the worker's broker and middleware, an actor that does nothing.

`dramatiq bench.noop_actor:setup` drains messages through the same
RedisBroker, namespace, middleware and Procfile options as the product's
worker, so the messages per second and CPU per message it reaches are what
Dramatiq alone costs here, before any event is applied.
"""

from __future__ import annotations

import dramatiq

from subsync import config
from worker import app

QUEUE = "bench_noop"
ACTOR = "noop"


def noop(event_id: str) -> None:
    """Takes an id as the apply actor does, and does nothing with it."""


def setup() -> None:
    broker = app.build(config.load())
    dramatiq.actor(noop, actor_name=ACTOR, queue_name=QUEUE, max_retries=0, broker=broker)
    dramatiq.set_broker(broker)


def message(event_id: str) -> dramatiq.Message[None]:
    return dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR, args=(event_id,), kwargs={}, options={})
