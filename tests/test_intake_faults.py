"""Intake when a server is down: nothing is lost, and Stripe is told to retry when needed."""

from __future__ import annotations

import dataclasses
import socket
import time
from datetime import UTC, datetime, timedelta

from helpers import NAMESPACE, REDIS_PROXY, event_row, make_event, post_event, queued_ids

from subsync import config, db, outbox
from subsync.broker import REDIS_SOCKET_TIMEOUT_S
from subsync.queue import EventQueue
from subsync.store import events
from webhooks import create_app, services


def test_postgres_refusing_connections_answers_503_then_the_retry_stores_once(postgres_proxy, conn, broker):
    proxy, url = postgres_proxy
    app = create_app(dataclasses.replace(config.load(), database_url=url))
    client = app.test_client()
    event = make_event()
    assert post_event(client, event).status_code == 200  # the pool is warm

    proxy.stop()
    retried = make_event()
    response = post_event(client, retried)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "storage_unavailable"

    proxy.start()
    # Stripe retries until it gets a 2xx. The pool reconnects with backoff,
    # so the first retry may still find no connection ready.
    for _ in range(10):
        response = post_event(client, retried)
        if response.status_code != 503:
            break
        time.sleep(0.5)
    assert response.status_code == 200
    assert response.get_json()["duplicate"] is False
    rows = conn.execute("SELECT id FROM stripe_events ORDER BY received_at").fetchall()
    assert [r["id"] for r in rows] == [event["id"], retried["id"]]


def test_redis_down_still_stores_and_the_sweep_queues_it_when_redis_is_back(client, conn, broker, redis_down, caplog):
    event_queue = EventQueue(broker)
    event = make_event()
    with caplog.at_level("WARNING"):
        response = post_event(client, event)
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "duplicate": False}
    assert (
        conn.execute("SELECT status FROM stripe_events WHERE id = %s", (event["id"],)).fetchone()["status"]
        == "received"
    )
    assert client.get("/readyz").get_json()["components"]["redis"].startswith("down")

    # While Redis is down the sender does not try it for every delivery: one
    # failed send opens the breaker and the next ones skip Redis (the sweep has them).
    before = sum(1 for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "enqueue_failed")
    second = make_event()
    with caplog.at_level("WARNING"):
        assert post_event(client, second).status_code == 200
    after = sum(1 for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "enqueue_failed")
    assert (before, after) == (1, 1)

    redis_down.start()
    assert queued_ids(broker) == []
    conn.execute("UPDATE stripe_events SET received_at = now() - interval '1 minute'")
    assert outbox.sweep(db.pool(), event_queue) == 2
    assert sorted(queued_ids(broker)) == sorted([event["id"], second["id"]])
    # Swept once: the next pass within SWEEP_AFTER leaves it alone.
    assert outbox.sweep(db.pool(), event_queue) == 0


def test_a_stalled_redis_never_slows_an_answer(client, conn, broker):
    # A server that takes connections (in the kernel's backlog) and never answers.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    real = REDIS_PROXY.target
    REDIS_PROXY.retarget(*blackhole.getsockname())
    try:
        event = make_event()
        began = time.monotonic()
        response = post_event(client, event, wait_for_send=False)
        took = time.monotonic() - began
        assert response.status_code == 200
        assert response.get_json() == {"received": True, "duplicate": False}
        # A send inside the request would wait out the Redis socket timeout.
        assert took < REDIS_SOCKET_TIMEOUT_S / 2
        row = conn.execute("SELECT status FROM stripe_events WHERE id = %s", (event["id"],)).fetchone()
        assert row["status"] == "received"
    finally:
        blackhole.close()  # the sender's stalled send fails at once
        REDIS_PROXY.retarget(*real)
    assert services.of(client.application).sender.flush(30)


def test_a_failed_event_whose_retry_redis_lost_is_queued_again_once_the_retry_is_overdue(
    client, conn, broker, event_queue
):
    # A failed event's retry waits in Redis as a delayed message; a Redis
    # restart without persistence loses it. The sweep steps in once that retry
    # is overdue, and never for an event with no retry coming.
    lost, waiting, permanent = make_event(), make_event(), make_event()
    for event in (lost, waiting, permanent):
        assert post_event(client, event).status_code == 200
    broker.client.delete(*broker.client.keys(f"{NAMESPACE}:*"))  # Redis restarted: it forgot everything

    now = datetime.now(UTC)
    with db.pool().connection() as c:
        events.finish(
            c,
            [
                events.Finished(lost["id"], "failed", "RuntimeError: boom", now - events.RETRY_LOST_AFTER),
                events.Finished(waiting["id"], "failed", "RuntimeError: boom", now + timedelta(minutes=20)),
                events.Finished(permanent["id"], "failed", "MalformedObject: subscription without 'status'", None),
            ],
        )
    conn.execute("UPDATE stripe_events SET received_at = now() - interval '2 hours'")

    assert outbox.sweep(db.pool(), event_queue) == 1
    assert queued_ids(broker) == [lost["id"]]
    assert outbox.sweep(db.pool(), event_queue) == 0  # the retry sent now is the one it waits for
    assert event_row(conn, permanent["id"])["status"] == "failed"


def test_connections_postgres_terminated_are_replaced_without_failing_a_delivery(database_url, conn, broker):
    # The web pool does not test a connection before lending it: a dropped one
    # must be found at first use and the delivery stored on a fresh one.
    url = f"{database_url}?application_name=subsync-web-terminated"
    app = create_app(dataclasses.replace(config.load(), database_url=url))
    client = app.test_client()
    try:
        pool = db.pool()
        pool.wait()
        held = [pool.getconn() for _ in range(3)]  # several idle connections, all about to be dropped
        for c in held:
            pool.putconn(c)
        assert post_event(client, make_event()).status_code == 200

        terminated = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = %s",
            ("subsync-web-terminated",),
        ).fetchone()["n"]
        assert terminated >= 3

        event = make_event()
        response = post_event(client, event)
        assert response.status_code == 200
        assert response.get_json() == {"received": True, "duplicate": False}
        assert (
            conn.execute("SELECT count(*) AS n FROM stripe_events WHERE id = %s", (event["id"],)).fetchone()["n"] == 1
        )
        assert event["id"] in queued_ids(broker)
        assert client.get("/readyz").get_json()["components"]["postgresql"] == "ok"
    finally:
        db.close_pool()
