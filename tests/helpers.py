"""What many tests share: the run's names and secrets, signed deliveries, and common payloads.

The environment every product process reads (database, Redis, namespace,
secrets) is set by conftest.py from the names here, before any product
module builds anything from it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import stripe
from proxy import TcpProxy

RUN_ID = uuid.uuid4().hex[:10]
ADMIN_URL = os.environ.get("TEST_ADMIN_DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
TEST_DB = f"subsync_test_{RUN_ID}"
TEST_DATABASE_URL = f"postgresql://root@127.0.0.1:5432/{TEST_DB}"
SECRET = "whsec_test_primary"
OLD_SECRET = "whsec_test_rotated_out"
NAMESPACE = f"subsync-test-{RUN_ID}"
GRACE = timedelta(hours=72)
DAY = 86400
# Redis is reached through a proxy the tests can cut (`redis_down`) or point
# at a private Redis (the fault test); every broker is built from this URL.
REDIS_PROXY = TcpProxy("127.0.0.1", int(os.environ.get("TEST_REDIS_PORT", "6379")))


def sign(payload: str, secret: str = SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


def make_event(
    event_type: str = "customer.subscription.updated",
    obj: dict[str, Any] | None = None,
    *,
    event_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created or int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj or {"id": "sub_test", "object": "subscription", "status": "active"}},
    }


def post_event(
    client: Any,
    event: dict[str, Any] | str,
    *,
    secret: str = SECRET,
    headers: dict[str, str] | None = None,
    wait_for_send: bool = True,
) -> Any:
    """POST a signed delivery; by default also wait until the receiver's sender thread has sent its message.

    The receiver answers before its message reaches Redis; waiting keeps the
    tests that look at the queue, or change Redis, free of that race.
    """
    from webhooks import services

    body = event if isinstance(event, str) else json.dumps(event)
    all_headers = {"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"}
    all_headers.update(headers or {})
    response = client.post("/webhooks/stripe", data=body, headers=all_headers)
    if wait_for_send:
        sender = services.of(client.application).sender
        assert sender.flush(10), "the receiver's sender thread did not finish sending"
    return response


def queued_messages(broker: Any, queue: str = "stripe_events") -> list[list[str]]:
    """The messages waiting in the Redis queue, each the list of event ids it carries."""
    from dramatiq import Message

    key = f"{NAMESPACE}:{queue}"
    ids = broker.client.lrange(key, 0, -1)
    if not ids:
        return []
    bodies = broker.client.hmget(f"{key}.msgs", ids)
    return [list(Message.decode(b).args[0]) for b in bodies if b]


def queued_ids(broker: Any, queue: str = "stripe_events") -> list[str]:
    """The event ids waiting in the Redis queue, in message order."""
    return [event_id for message in queued_messages(broker, queue) for event_id in message]


def subscription_obj(sub_id="sub_1", status="active", period_end=None, **extra) -> dict[str, Any]:
    """A basil-shaped subscription, active for 29 more days unless told otherwise."""
    now = int(time.time())
    obj = {
        "id": sub_id,
        "object": "subscription",
        "customer": "cus_1",
        "status": status,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        "currency": "usd",
        "metadata": {},
        "latest_invoice": "in_1",
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id.removeprefix('sub_')}",
                    "object": "subscription_item",
                    "current_period_start": now - 86400,
                    "current_period_end": period_end or now + 29 * 86400,
                    "price": {"id": "price_premium", "object": "price", "currency": "usd", "unit_amount": 2999},
                }
            ],
        },
    }
    obj.update(extra)
    return obj


def apply(event_id: str) -> str:
    """Apply one stored event as the worker does, alone: its status after ('skipped' if nothing was to do)."""
    from subsync import db
    from worker.apply import apply_events

    results = apply_events(db.pool(), [event_id], grace=GRACE)
    return results[0].status if results else "skipped"


def event_row(conn: Any, event_id: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM stripe_events WHERE id = %s", (event_id,)).fetchone()


def count(conn: Any, sql: str, *args: Any) -> int:
    return conn.execute(sql, args).fetchone()["n"]


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def access_feed_example() -> ModuleType:
    """docs/examples/access_feed.py, the documented access-feed reader, loaded as a module."""
    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "access_feed.py"
    spec = importlib.util.spec_from_file_location("access_feed", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
