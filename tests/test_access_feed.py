"""The access feed: a listener stopped in the middle of a lifecycle catches up every change exactly once.

The listener is the README's example (docs/examples/access_feed.py), run as
an application would, against real PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from helpers import GRACE, access_feed_example, apply, make_event, post_event, subscription_obj, wait_for

from reconciler import grace
from subsync import db

access_feed = access_feed_example()


class Listener:
    """The example's follow() on a thread, recording each change it handles in a table with a primary key."""

    def __init__(self, database_url: str, fail_on: set[int] | None = None) -> None:
        self.stopped = threading.Event()
        self.fail_on = fail_on or set()

        def handle(conn, change):
            if change["id"] in self.fail_on:
                self.fail_on.discard(change["id"])
                msg = "the application's own failure: nothing of this change is kept"
                raise RuntimeError(msg)
            conn.execute("INSERT INTO app_handled (id) VALUES (%s)", (change["id"],))  # a repeat would raise

        def run():
            while not self.stopped.is_set():
                try:
                    access_feed.follow(database_url, handle, stop=self.stopped.is_set, wait_s=0.2)
                except RuntimeError:
                    continue  # the application restarts its follower

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)


def deliver(client, obj, created):
    event = make_event("customer.subscription.updated", obj, created=created)
    post_event(client, event)
    assert apply(event["id"]) == "processed"


def test_a_listener_stopped_mid_lifecycle_catches_up_every_change_exactly_once(client, conn, database_url):
    conn.execute("CREATE TABLE app_handled (id bigint PRIMARY KEY)")
    try:
        now = int(time.time())
        listener = Listener(database_url)
        deliver(client, subscription_obj("sub_a"), now - 50)  # none -> full
        deliver(client, subscription_obj("sub_b", status="trialing"), now - 49)  # none -> full
        wait_for(lambda: conn.execute("SELECT count(*) AS n FROM app_handled").fetchone()["n"] == 2)
        listener.stop()  # the application is down for a while

        deliver(client, subscription_obj("sub_a", status="past_due"), now - 40)  # full -> restricted
        deliver(client, subscription_obj("sub_a", status="active"), now - 30)  # restricted -> full
        ended = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
        deliver(client, subscription_obj("sub_b", period_end=ended), now - 20)  # full -> grace
        grace.refresh(db.pool(), grace=GRACE, api=None, now=datetime.now(UTC) + GRACE)  # grace -> restricted

        first_after_restart = conn.execute("SELECT min(id) AS i FROM access_changes WHERE id > 2").fetchone()["i"]
        listener = Listener(database_url, fail_on={first_after_restart})  # it fails once on its first change back
        deliver(client, subscription_obj("sub_c"), now - 10)  # while it catches up: none -> full
        fed = [r["id"] for r in conn.execute("SELECT id FROM access_changes ORDER BY id")]
        assert len(fed) == 7
        wait_for(lambda: conn.execute("SELECT count(*) AS n FROM app_handled").fetchone()["n"] == len(fed))
        listener.stop()
        handled = [r["id"] for r in conn.execute("SELECT id FROM app_handled ORDER BY id")]
        assert handled == fed
    finally:
        conn.execute("DROP TABLE IF EXISTS app_handled; DROP TABLE IF EXISTS app_access_cursor")


def test_every_access_change_is_fed_and_announced_with_its_id(client, conn, database_url):
    import json

    import psycopg

    with psycopg.connect(database_url, autocommit=True) as listen:
        listen.execute("LISTEN subscription_access")
        deliver(client, subscription_obj("sub_n"), int(time.time()))
        note = next(listen.notifies(timeout=5, stop_after=1))
    payload = json.loads(note.payload)
    row = conn.execute("SELECT * FROM access_changes").fetchone()
    assert payload["id"] == row["id"]
    assert (payload["subscription_id"], payload["from"], payload["to"], payload["source"]) == (
        "sub_n",
        None,
        "full",
        "webhook",
    )
