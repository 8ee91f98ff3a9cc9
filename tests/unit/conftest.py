"""The unit layer: pure rules and in-process parts, no PostgreSQL, no Redis (`make unit`).

A test here that asks for a fixture reaching a server fails at collection,
so the layer stays fast and runnable anywhere.
"""

from __future__ import annotations

import pytest

SERVER_FIXTURES = frozenset(
    {"database_url", "conn", "broker", "worker_broker", "event_queue", "app", "client", "redis_down", "postgres_proxy"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if needs and "tests/unit/" in str(item.path):
            msg = f"{item.nodeid} is a unit test but uses {sorted(needs)}, which reach a server"
            raise pytest.UsageError(msg)
