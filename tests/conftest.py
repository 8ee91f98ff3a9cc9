"""Test set-up: real PostgreSQL and Redis, a database and a queue namespace per run.

The environment is set here, at import, because the Dramatiq broker is built
from it when `worker` is first imported.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from proxy import TcpProxy

RUN_ID = uuid.uuid4().hex[:10]
ADMIN_URL = os.environ.get("TEST_ADMIN_DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
TEST_DB = f"subsync_test_{RUN_ID}"
TEST_DATABASE_URL = f"postgresql://root@127.0.0.1:5432/{TEST_DB}"
SECRET = "whsec_test_primary"
OLD_SECRET = "whsec_test_rotated_out"
NAMESPACE = f"subsync-test-{RUN_ID}"
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "stripe-fixtures"

# Redis is reached through a proxy the tests can cut (`redis_down`): the
# broker is built once per process, from this URL.
REDIS_PROXY = TcpProxy("127.0.0.1", int(os.environ.get("TEST_REDIS_PORT", "6379")))

os.environ.update(
    {
        "DATABASE_URL": TEST_DATABASE_URL,
        "REDIS_URL": f"redis://127.0.0.1:{REDIS_PROXY.port}/0",
        "QUEUE_NAMESPACE": NAMESPACE,
        "STRIPE_WEBHOOK_SECRET": f"{SECRET},{OLD_SECRET}",
        "LOG_FORMAT": "console",
    }
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEST_DB}"')
    from subsync import db

    db.apply_schema(TEST_DATABASE_URL)
    yield TEST_DATABASE_URL
    db.close_pool()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (TEST_DB,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}"')


TABLES = (
    "stripe_events",
    "subscriptions",
    "invoices",
    "payments",
    "subscription_changes",
    "reconciliation_runs",
    "customers",
    "event_replays",
    "job_state",
    "job_runs",
)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A clean database (every table emptied), this process's pool open on it, and an autocommit connection."""
    from psycopg.rows import dict_row

    from subsync import db

    db.open_pool(database_url, name="tests", max_size=16)

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        c.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        yield c


@pytest.fixture
def broker() -> Iterator[Any]:
    """The real Redis broker, its queues emptied before and after the test."""
    from worker import queue
    from worker.broker import broker as the_broker

    def flush() -> None:
        keys = list(the_broker.client.scan_iter(f"{NAMESPACE}:*"))
        if keys:
            the_broker.client.delete(*keys)
        queue.close_breaker()

    flush()
    yield the_broker
    flush()


def queued_ids(broker: Any, queue: str = "stripe_events") -> list[str]:
    """The event ids waiting in the Redis queue."""
    from dramatiq import Message

    key = f"{NAMESPACE}:{queue}"
    ids = broker.client.lrange(key, 0, -1)
    if not ids:
        return []
    bodies = broker.client.hmget(f"{key}.msgs", ids)
    return [Message.decode(b).args[0] for b in bodies if b]


@pytest.fixture
def app(conn: psycopg.Connection[Any], broker: Any) -> Any:
    from subsync import config
    from webhooks import create_app

    return create_app(config.load())


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


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
    from worker.queue import sender

    body = event if isinstance(event, str) else json.dumps(event)
    all_headers = {"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"}
    all_headers.update(headers or {})
    response = client.post("/webhooks/stripe", data=body, headers=all_headers)
    if wait_for_send:
        assert sender.flush(10), "the receiver's sender thread did not finish sending"
    return response


def load_fixture(relative: str) -> dict[str, Any]:
    path = FIXTURES / relative
    if not path.exists():
        pytest.skip(f"fixture {relative} not present")
    return json.loads(path.read_text())


@pytest.fixture
def redis_down() -> Iterator[TcpProxy]:
    """Redis unreachable for the test's first part; call `.start()` to bring it back."""
    REDIS_PROXY.stop()
    try:
        yield REDIS_PROXY
    finally:
        if REDIS_PROXY._listener is None:
            REDIS_PROXY.start()


@pytest.fixture
def postgres_proxy(database_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of PostgreSQL and the test database's URL through it."""
    proxy = TcpProxy("127.0.0.1", 5432)
    yield proxy, database_url.replace(":5432/", f":{proxy.port}/")
    proxy.stop()
    from subsync import db

    db.close_pool()


@pytest.fixture
def broken_subscriptions_table(conn: psycopg.Connection[Any]) -> Iterator[Any]:
    """A bad database change: every write to subscriptions raises."""
    conn.execute(
        """
        CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN RAISE EXCEPTION 'column "plan_tier" does not exist (bad migration)'; END$$;
        CREATE TRIGGER refuse_write BEFORE INSERT OR UPDATE ON subscriptions
        FOR EACH ROW EXECUTE FUNCTION refuse_write();
        """
    )

    def fix() -> None:
        conn.execute("DROP TRIGGER IF EXISTS refuse_write ON subscriptions; DROP FUNCTION IF EXISTS refuse_write();")

    yield fix
    fix()
