"""The floor of the pipeline bench: the worker's broker and middleware, an actor that does nothing.

`dramatiq bench.noop_actor` drains messages through the same RedisBroker,
namespace, middleware and Procfile options as the product's worker, so the
messages per second and CPU per message it reaches are what Dramatiq alone
costs here, before any event is applied.
"""

from __future__ import annotations

import dramatiq

from worker.broker import broker  # noqa: F401 - the product's broker, set as Dramatiq's

QUEUE = "bench_noop"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(event_id: str) -> None:
    """Takes an id as process_event does, and does nothing with it."""
