"""Poison events stay alone: a payload that cannot be read back, or a handler that raises, fails only itself.

Rows like these cannot enter through today's receiver; they can be in a
table written by an older version, or by hand.
"""

from __future__ import annotations

import json

from helpers import GRACE, event_row, make_event

from subsync import db
from worker.apply import apply_events


def insert_raw(conn, event_id: str, payload_text: str) -> None:
    conn.execute(
        "INSERT INTO stripe_events (id, type, created_at, payload) VALUES (%s, 'customer.created', now(), %s::jsonb)",
        (event_id, payload_text),
    )


def customer_event(i: int) -> dict:
    return make_event("customer.created", {"id": f"cus_{i}", "object": "customer", "email": f"c{i}@example.com"})


def test_a_payload_python_cannot_read_back_fails_alone_once_with_a_one_line_reason(conn):
    good, other = customer_event(1), customer_event(2)
    poison = json.dumps(customer_event(3)).replace('"email"', '"amount": 1e5000, "email"')
    insert_raw(conn, good["id"], json.dumps(good))
    insert_raw(conn, "evt_poison", poison)
    insert_raw(conn, other["id"], json.dumps(other))

    results = {r.id: r for r in apply_events(db.pool(), [good["id"], "evt_poison", other["id"]], grace=GRACE)}
    assert (results[good["id"]].status, results[other["id"]].status) == ("processed", "processed")
    assert results["evt_poison"].retry_in_ms is None
    row = conn.execute(
        "SELECT status, attempts, retry_at, last_error FROM stripe_events WHERE id = 'evt_poison'"
    ).fetchone()
    assert (row["status"], row["attempts"], row["retry_at"]) == ("failed", 1, None)
    assert row["last_error"].startswith("InvalidPayload: ")
    assert "\n" not in row["last_error"]
    assert conn.execute("SELECT count(*) AS n FROM customers").fetchone()["n"] == 2
    for event_id in (good["id"], other["id"]):
        assert event_row(conn, event_id)["last_error"] is None


def test_events_show_prints_a_payload_it_cannot_read_without_a_traceback(app, conn):
    insert_raw(conn, "evt_poison", json.dumps(customer_event(3)).replace('"email"', '"amount": 1e5000, "email"'))
    for args in (["events", "show", "evt_poison"], ["events", "show", "evt_poison", "--payload"]):
        result = app.test_cli_runner().invoke(args=args)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        assert "cannot be read back" in result.output
    result = app.test_cli_runner().invoke(args=["events", "show", "evt_poison", "--json"])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["payload"] is None
    assert "too long" in document["payload_unreadable"] or "large" in document["payload_unreadable"]
