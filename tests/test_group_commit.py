"""The receiver's group commit: deliveries arriving together are stored in one statement, each with its outcome."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from helpers import make_event, post_event, queued_ids
from psycopg_pool import ConnectionPool

from subsync import db, intake
from subsync.envelope import read_event
from subsync.store.events import Arrival
from webhooks import services
from webhooks.group_commit import GroupCommit


def arrival_of(event: dict[str, Any], payload: str | None = None) -> Arrival:
    body = json.dumps(event)
    return intake.arrival(read_event(body, tolerance_s=300)[1], payload or body, livemode=False)


class HeldStore:
    """The production store, recording each statement's rows; the first one waits until `release`."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, pool: ConnectionPool[Any], arrivals: Sequence[Arrival]) -> list[intake.Stored]:
        self.batches.append([a.header.id for a in arrivals])
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(10)
        return intake.store(pool, arrivals)


def in_line(commit: GroupCommit, count: int) -> None:
    # The requests queued behind the leader; read from the private list because
    # nothing else can tell a waiting request from one not yet arrived.
    deadline = time.monotonic() + 10
    while len(commit._line) < count:
        assert time.monotonic() < deadline, "the requests never queued"
        time.sleep(0.01)


def submit_all(commit: GroupCommit, arrivals: Sequence[Arrival], held: HeldStore) -> list[Any]:
    """The first arrival leads and is held; the others queue behind it; then the statement runs."""
    outcomes: list[Any] = [None] * len(arrivals)

    def one(i: int) -> None:
        try:
            outcomes[i] = commit.submit(arrivals[i])
        except Exception as exc:  # the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(0,))]
    threads[0].start()
    assert held.entered.wait(10)
    for i in range(1, len(arrivals)):
        threads.append(threading.Thread(target=one, args=(i,)))
        threads[-1].start()
        in_line(commit, i)  # in this order
    held.release.set()
    for t in threads:
        t.join(10)
    return outcomes


def test_deliveries_arriving_during_a_statement_are_stored_by_the_next_one_each_with_its_outcome(conn):
    stored_before = make_event()
    intake.store(db.pool(), [arrival_of(stored_before)])
    fresh = make_event()
    not_applied = make_event("payment_intent.created", {"id": "pi_1", "object": "payment_intent"})
    lead, later = make_event(), make_event()
    sent: list[list[str]] = []
    held = HeldStore()
    commit = GroupCommit(db.pool(), lambda ids: sent.append(ids) or len(ids), livemode=False, store_rows=held)

    outcomes = submit_all(
        commit,
        [arrival_of(e) for e in (lead, fresh, stored_before, not_applied, fresh, later)],
        held,
    )

    assert held.batches == [
        [lead["id"]],
        [fresh["id"], stored_before["id"], not_applied["id"], fresh["id"], later["id"]],
    ]
    assert [(o.new, o.queued) for o in outcomes] == [
        (True, True),
        (True, True),
        (False, False),  # a duplicate of a stored event that did not fail
        (True, False),  # stored ignored, never queued
        (False, False),  # the same id twice in one statement: the second is its duplicate
        (True, True),
    ]
    assert sent == [[lead["id"]], [fresh["id"], later["id"]]]  # one hand-over per statement
    rows = conn.execute("SELECT id, status FROM stripe_events").fetchall()
    assert sorted((r["id"], r["status"]) for r in rows) == sorted(
        [
            (stored_before["id"], "received"),
            (lead["id"], "received"),
            (fresh["id"], "received"),
            (not_applied["id"], "ignored"),
            (later["id"], "received"),
        ]
    )


def test_a_row_postgresql_refuses_fails_alone_and_its_neighbours_are_stored(conn):
    good, bad, other = make_event(), make_event(), make_event()
    # Past the receiver's own checks, a body jsonb cannot hold: PostgreSQL refuses the statement.
    unstorable = json.dumps(bad).replace('"active"', '"act\\u0000ive"')
    held = HeldStore()
    commit = GroupCommit(db.pool(), len, livemode=False, store_rows=held)

    outcomes = submit_all(commit, [arrival_of(good), arrival_of(bad, unstorable), arrival_of(other)], held)

    assert outcomes[0].new is True
    assert isinstance(outcomes[1], psycopg.errors.UntranslatableCharacter)
    assert outcomes[2].new is True
    # The statement of two failed, then each row was tried alone.
    assert held.batches == [[good["id"]], [bad["id"], other["id"]], [bad["id"]], [other["id"]]]
    ids = {r["id"] for r in conn.execute("SELECT id FROM stripe_events").fetchall()}
    assert ids == {good["id"], other["id"]}


# A request left waiting behind a leader that is gone would hang here.
@pytest.mark.timeout(30)
def test_without_a_connection_every_request_of_the_statement_fails_and_the_next_one_leads(conn):
    # A pool whose server never answers: no connection within its timeout.
    dead = ConnectionPool("postgresql://root@127.0.0.1:1/none", min_size=0, max_size=1, timeout=0.5, open=True)
    try:
        held = HeldStore()
        commit = GroupCommit(dead, len, livemode=False, store_rows=held)
        arrivals = [arrival_of(make_event()) for _ in range(3)]
        outcomes = submit_all(commit, arrivals, held)
        assert [type(o).__name__ for o in outcomes] == ["PoolTimeout"] * 3
        # The two waiting failed together: no server refused a row, so none is tried alone.
        ids = [a.header.id for a in arrivals]
        assert held.batches == [ids[:1], ids[1:]]

        # Nobody is left holding the lead: the next delivery stores (or fails) at once.
        with pytest.raises(psycopg.OperationalError):
            commit.submit(arrival_of(make_event()))
    finally:
        dead.close()


# A request left waiting behind a leader that is gone would hang here.
@pytest.mark.timeout(30)
def test_a_bug_in_the_statement_reaches_every_waiting_request_and_the_lead_is_given_up(conn):
    def broken(pool: ConnectionPool[Any], arrivals: Sequence[Arrival]) -> list[intake.Stored]:
        raise RuntimeError("a bug")

    commit = GroupCommit(db.pool(), len, livemode=False, store_rows=broken)
    with pytest.raises(RuntimeError):
        commit.submit(arrival_of(make_event()))
    with pytest.raises(RuntimeError):  # not blocked behind a leader that is gone
        commit.submit(arrival_of(make_event()))


def test_a_sender_that_fails_leaves_the_answers_and_the_rows_to_the_sweep(conn):
    def broken_sender(ids: list[str]) -> int:
        raise RuntimeError("can't start new thread")

    commit = GroupCommit(db.pool(), broken_sender, livemode=False)
    event = make_event()
    ingested = commit.submit(arrival_of(event))
    assert (ingested.new, ingested.queued) == (True, False)
    row = conn.execute("SELECT status FROM stripe_events WHERE id = %s", (event["id"],)).fetchone()
    assert row["status"] == "received"  # the outbox sweep queues it


def test_concurrent_signed_deliveries_are_each_stored_and_queued_once(client, conn, broker):
    events = [make_event() for _ in range(60)]
    deliveries = events + events[:20]  # Stripe's duplicates among them

    def post(event: dict[str, Any]) -> Any:
        return post_event(client, event, wait_for_send=False)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, deliveries))

    assert {a.status_code for a in answers} == {200}
    new = [e["id"] for e, a in zip(deliveries, answers, strict=True) if a.get_json()["duplicate"] is False]
    assert sorted(new) == sorted(e["id"] for e in events)  # each new exactly once
    assert services.of(client.application).sender.flush(30)
    assert sorted(queued_ids(broker)) == sorted(e["id"] for e in events)
    assert conn.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == len(events)
