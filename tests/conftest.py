"""Test set-up: real PostgreSQL and Redis, a database and a queue namespace per run.

The environment is set here, at import, so that every product process the
tests build (an app, a worker's broker, a subprocess) reads this run's
database and namespace from it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import ADMIN_URL, NAMESPACE, OLD_SECRET, REDIS_PROXY, SECRET, TEST_DATABASE_URL, TEST_DB
from proxy import TcpProxy

os.environ.update(
    {
        "DATABASE_URL": TEST_DATABASE_URL,
        "REDIS_URL": f"redis://127.0.0.1:{REDIS_PROXY.port}/0",
        "QUEUE_NAMESPACE": NAMESPACE,
        "STRIPE_WEBHOOK_SECRET": f"{SECRET},{OLD_SECRET}",
        "STRIPE_MODE": "test",
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


# Every table schema.sql creates: a test starts with all of them empty.
TABLES = tuple(
    re.findall(r"^CREATE TABLE IF NOT EXISTS (\w+)", (Path(__file__).parent.parent / "schema.sql").read_text(), re.M)
)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A clean database (every table emptied), this process's pool open on it, and an autocommit connection."""
    from psycopg.rows import dict_row

    from subsync import db

    # A generous wait for a connection: after the fault tests cut every
    # connection, the pool reconnects while the machine is busy.
    db.open_pool(database_url, name="tests", max_size=16, timeout=15)

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        c.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        yield c


@pytest.fixture(scope="session")
def worker_broker() -> Any:
    """The worker's broker (middleware and actor declared), Dramatiq's global one, built once per run."""
    import dramatiq

    from subsync import config
    from worker import app

    the_broker = app.build(config.load())
    dramatiq.set_broker(the_broker)
    return the_broker


@pytest.fixture
def broker(worker_broker: Any) -> Iterator[Any]:
    """The real Redis broker of this run's namespace, its queues emptied before and after the test."""

    def flush() -> None:
        keys = list(worker_broker.client.scan_iter(f"{NAMESPACE}:*"))
        if keys:
            worker_broker.client.delete(*keys)

    flush()
    yield worker_broker
    flush()


@pytest.fixture
def event_queue(broker: Any) -> Any:
    """A sender's queue on the run's namespace (what the scheduler and the commands send with)."""
    from subsync.queue import EventQueue

    return EventQueue(broker)


@pytest.fixture
def app(conn: psycopg.Connection[Any], broker: Any) -> Any:
    from subsync import config
    from webhooks import create_app

    return create_app(config.load(), commands=True)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


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
