"""The on-call commands: find a failed event, see why, fix, replay, see it applied.

Commands run through Flask's CLI runner against the real database and the
real Redis queue; the worker is `apply_event` called directly on what the
replay queued.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from helpers import apply, make_event, post_event, queued_ids, subscription_obj

from subsync import db

LONG_ERROR = 'column "plan_tier" does not exist (bad migration)'


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def run_json(app, *args):
    result = run(app, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def apply_failing(event_id):
    assert apply(event_id) == "failed"


def deliver(client, event_type="customer.subscription.created", obj=None, **kwargs):
    event = make_event(event_type, obj if obj is not None else subscription_obj(), **kwargs)
    assert post_event(client, event).status_code == 200
    return event


def status_of(conn, event_id):
    return conn.execute("SELECT status FROM stripe_events WHERE id = %s", (event_id,)).fetchone()["status"]


def set_received_at(conn, event_id, seconds_ago):
    conn.execute(
        "UPDATE stripe_events SET received_at = now() - make_interval(secs => %s) WHERE id = %s",
        (seconds_ago, event_id),
    )


def clear_queue(broker):
    broker.client.delete(f"{broker.namespace}:stripe_events", f"{broker.namespace}:stripe_events.msgs")


def drain(broker):
    """Apply what is queued, as a worker would, and empty the queue."""
    ids = queued_ids(broker)
    clear_queue(broker)
    return {event_id: apply(event_id) for event_id in ids}


# --- events list ---


def test_list_is_newest_first_and_filters_by_status_type_time_and_limit(app, client, conn, broker):
    old_sub = deliver(client, obj=subscription_obj("sub_old"))
    invoice = deliver(client, "invoice.created", {"id": "in_1", "object": "invoice", "status": "draft"})
    new_sub = deliver(client, obj=subscription_obj("sub_new"))
    set_received_at(conn, old_sub["id"], 3 * 3600)
    set_received_at(conn, invoice["id"], 60)
    apply(new_sub["id"])

    listed = run_json(app, "events", "list")
    assert [e["id"] for e in listed] == [new_sub["id"], invoice["id"], old_sub["id"]]
    assert listed[0]["status"] == "processed"
    assert "payload" not in listed[0]

    assert [e["id"] for e in run_json(app, "events", "list", "--status", "received")] == [invoice["id"], old_sub["id"]]
    assert [e["id"] for e in run_json(app, "events", "list", "--type", "invoice.*")] == [invoice["id"]]
    assert [e["id"] for e in run_json(app, "events", "list", "--type", "invoice.created")] == [invoice["id"]]
    assert [e["id"] for e in run_json(app, "events", "list", "--since", "2h")] == [new_sub["id"], invoice["id"]]
    assert [e["id"] for e in run_json(app, "events", "list", "--object", "sub_old")] == [old_sub["id"]]
    assert [e["id"] for e in run_json(app, "events", "list", "--limit", "1")] == [new_sub["id"]]
    assert run_json(app, "events", "list", "--status", "failed") == []


def test_the_table_shows_a_failure_with_its_error_cut_short(app, client, conn, broker, broken_subscriptions_table):
    event = deliver(client)
    apply_failing(event["id"])
    conn.execute(
        "UPDATE stripe_events SET last_error = last_error || %s WHERE id = %s", (" and more " * 30, event["id"])
    )

    result = run(app, "events", "list", "--status", "failed")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:5] == ["ID", "TYPE", "STATUS", "ATTEMPTS", "RECEIVED"]
    assert event["id"] in row
    assert "failed" in row
    assert "plan_tier" in row
    assert row.endswith("…")
    assert len(row) < 200


def test_list_json_is_one_document_and_nothing_else(app, client, broker):
    deliver(client)
    result = run(app, "events", "list", "--json")
    assert result.exit_code == 0
    assert isinstance(json.loads(result.stdout), list)


# --- events show ---


def test_show_prints_what_an_applied_event_changed(app, client, conn, broker):
    event = deliver(client)
    apply(event["id"])

    shown = run_json(app, "events", "show", event["id"])
    assert shown["event"]["status"] == "processed"
    assert shown["event"]["attempts"] == 1
    assert shown["object"] == {"object": "subscription", "id": "sub_1"}
    assert shown["last_error"] is None
    assert shown["payload"]["id"] == event["id"]
    [change] = shown["changes"]
    assert (change["subscription_id"], change["source"], change["source_id"]) == ("sub_1", "webhook", event["id"])
    assert change["after"]["access"] == "full"

    result = run(app, "events", "show", event["id"])
    assert result.exit_code == 0
    assert "processed" in result.stdout
    assert "changes it made (1)" in result.stdout
    assert "[webhook " in result.stdout


def test_show_prints_the_full_last_error_of_a_failed_event(app, client, conn, broker, broken_subscriptions_table):
    event = deliver(client)
    apply_failing(event["id"])
    error = conn.execute("SELECT last_error FROM stripe_events WHERE id = %s", (event["id"],)).fetchone()["last_error"]
    assert LONG_ERROR in error

    result = run(app, "events", "show", event["id"])
    assert result.exit_code == 0
    assert "status            failed" in result.stdout
    assert "last error:" in result.stdout
    for line in error.splitlines():
        assert line in result.stdout
    assert "changes it made (0)" in result.stdout
    assert run_json(app, "events", "show", event["id"])["last_error"] == error


# --- the 3 a.m. story: a bad database change ---


def test_a_bad_migration_is_listed_with_its_cause_then_replayed_by_id_and_in_bulk_and_applied_once(
    app, client, conn, broker, broken_subscriptions_table
):
    events = [deliver(client, obj=subscription_obj(f"sub_{n}")) for n in range(3)]
    clear_queue(broker)
    for event in events:  # the first attempts, as the worker makes them
        apply_failing(event["id"])

    failed = run_json(app, "events", "list", "--status", "failed")
    assert {e["id"] for e in failed} == {e["id"] for e in events}
    assert all("plan_tier" in e["last_error"] for e in failed)

    broken_subscriptions_table()  # the fix is deployed

    first = events[0]["id"]
    result = run(app, "events", "replay", first, "--by", "oncall-alice")
    assert result.exit_code == 0, result.output
    assert "queued 1 event for replay" in result.stdout
    assert queued_ids(broker) == [first]
    assert drain(broker) == {first: "processed"}

    result = run(app, "events", "replay", "--status", "failed", "--type", "customer.subscription.*", "--by", "bob")
    assert result.exit_code == 0, result.output
    assert "queued 2 events" in result.stdout
    assert sorted(queued_ids(broker)) == sorted(e["id"] for e in events[1:])
    assert set(drain(broker).values()) == {"processed"}

    assert run_json(app, "events", "list", "--status", "failed") == []
    for event in events:
        assert status_of(conn, event["id"]) == "processed"
        assert apply(event["id"]) == "skipped"  # a late duplicate message changes nothing
    changes = conn.execute("SELECT subscription_id, source, source_id FROM subscription_changes").fetchall()
    assert sorted((c["subscription_id"], c["source"], c["source_id"]) for c in changes) == sorted(
        (f"sub_{n}", "replay", e["id"]) for n, e in enumerate(events)
    )
    assert conn.execute("SELECT count(*) AS n FROM subscriptions").fetchone()["n"] == 3

    replays = conn.execute("SELECT * FROM event_replays ORDER BY id").fetchall()
    assert [(r["requested_by"], sorted(r["event_ids"]), r["dry_run"]) for r in replays] == [
        ("oncall-alice", [first], False),
        ("bob", sorted(e["id"] for e in events[1:]), False),
    ]
    assert replays[0]["filters"] == {}
    assert replays[1]["filters"] == {"status": "failed", "type": "customer.subscription.*"}

    shown = run_json(app, "events", "show", first)
    assert [r["requested_by"] for r in shown["replays"]] == ["oncall-alice"]
    assert shown["changes"][0]["source"] == "replay"
    assert shown["event"]["replays"] == 1


def test_bulk_replay_takes_only_failed_events_in_the_time_window(app, client, conn, broker, broken_subscriptions_table):
    old, recent = deliver(client, obj=subscription_obj("sub_a")), deliver(client, obj=subscription_obj("sub_b"))
    pending = deliver(client, obj=subscription_obj("sub_c"))  # never attempted: stays received
    clear_queue(broker)
    apply_failing(old["id"])
    apply_failing(recent["id"])
    set_received_at(conn, old["id"], 2 * 86400)
    broken_subscriptions_table()

    doc = run_json(app, "events", "replay", "--status", "failed", "--since", "1d")
    assert doc["event_ids"] == [recent["id"]]
    assert doc["count"] == 1
    assert status_of(conn, old["id"]) == "failed"
    assert status_of(conn, pending["id"]) == "received"

    doc = run_json(app, "events", "replay", "--status", "failed", "--until", "1d")
    assert doc["event_ids"] == [old["id"]]
    assert sorted(queued_ids(broker)) == sorted([old["id"], recent["id"]])


def test_replay_of_nothing_matching_queues_nothing_and_records_nothing(app, conn, broker):
    result = run(app, "events", "replay", "--status", "failed")
    assert result.exit_code == 0
    assert "nothing to replay" in result.stdout
    assert queued_ids(broker) == []
    assert conn.execute("SELECT count(*) AS n FROM event_replays").fetchone()["n"] == 0


def test_replaying_a_processed_event_by_id_is_harmless(app, client, conn, broker):
    event = deliver(client)
    drain(broker)
    assert status_of(conn, event["id"]) == "processed"

    assert run(app, "events", "replay", event["id"]).exit_code == 0
    assert drain(broker) == {event["id"]: "processed"}
    assert conn.execute("SELECT count(*) AS n FROM subscription_changes").fetchone()["n"] == 1


def test_many_events_are_queued_with_a_progress_bar(app, conn, broker):
    n = 250
    conn.execute(
        """INSERT INTO stripe_events (id, type, created_at, payload, status, attempts, last_error)
           SELECT 'evt_many_' || i, 'invoice.paid', now(), '{}'::jsonb, 'failed', 1, 'boom'
             FROM generate_series(1, %s) i""",
        (n,),
    )
    result = run(app, "events", "replay", "--status", "failed")
    assert result.exit_code == 0, result.output
    assert f"queued {n} events" in result.stdout
    assert "queueing" in result.stderr
    assert len(queued_ids(broker)) == n


# --- Stripe's dashboard resend ---


def test_a_resend_from_stripes_dashboard_of_a_failed_event_replays_it(
    app, client, conn, broker, broken_subscriptions_table
):
    event = deliver(client)
    clear_queue(broker)  # the worker's first attempt, below, takes the message
    apply_failing(event["id"])
    broken_subscriptions_table()

    answer = post_event(client, event)  # the same signed event, resent
    assert answer.get_json() == {"received": True, "duplicate": True}
    assert event["id"] in queued_ids(broker)
    assert drain(broker) == {event["id"]: "processed"}
    change = conn.execute("SELECT source, source_id FROM subscription_changes").fetchone()
    assert change == {"source": "replay", "source_id": event["id"]}
    assert run_json(app, "events", "show", event["id"])["event"]["status"] == "processed"


# --- dry run ---


def test_a_dry_run_shows_what_would_be_queued_and_changes_nothing(
    app, client, conn, broker, broken_subscriptions_table
):
    event = deliver(client)
    clear_queue(broker)
    apply_failing(event["id"])
    before = conn.execute("SELECT * FROM stripe_events").fetchall()

    result = run(app, "events", "replay", "--status", "failed", "--dry-run")
    assert result.exit_code == 0
    assert "dry run: would queue 1 event" in result.stdout
    assert event["id"] in result.stdout
    doc = run_json(app, "events", "replay", event["id"], "--dry-run")
    assert (doc["dry_run"], doc["event_ids"]) == (True, [event["id"]])

    assert conn.execute("SELECT * FROM stripe_events").fetchall() == before
    assert conn.execute("SELECT count(*) AS n FROM event_replays").fetchone()["n"] == 0
    assert queued_ids(broker) == []


# --- exit codes ---


def test_an_unknown_id_exits_1_with_one_line(app, conn, broker):
    result = run(app, "events", "show", "evt_nope")
    assert result.exit_code == 1
    assert result.stderr == "Error: no event evt_nope\n"
    assert result.stdout == ""
    assert isinstance(result.exception, SystemExit)

    result = run(app, "subscriptions", "show", "sub_nope")
    assert (result.exit_code, result.stderr) == (1, "Error: no subscription sub_nope\n")


def test_replay_with_an_unknown_id_names_it_and_queues_nothing(app, client, conn, broker):
    event = deliver(client)
    clear_queue(broker)
    result = run(app, "events", "replay", event["id"], "evt_nope")
    assert result.exit_code == 1
    assert result.stderr == "Error: no event evt_nope; nothing queued\n"
    assert queued_ids(broker) == []
    assert conn.execute("SELECT replays FROM stripe_events").fetchone()["replays"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["events", "list", "--bogus"],
        ["events", "list", "--status", "done"],
        ["events", "list", "--since", "yesterday-ish"],
        ["events", "list", "--limit", "0"],
        ["events", "show"],
        ["events", "replay"],
        ["events", "replay", "--type", "invoice.paid"],
        ["events", "replay", "--status", "processed"],
        ["events", "replay", "evt_1", "--status", "failed"],
        ["subscriptions", "show"],
    ],
)
def test_bad_usage_exits_2(app, args):
    result = run(app, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_a_database_down_is_one_line_and_exit_1(app, database_url):
    from subsync import config
    from webhooks import create_app

    unreachable = dataclasses.replace(config.load(), database_url="postgresql://root@127.0.0.1:1/none")
    down = create_app(unreachable, commands=True)
    try:
        result = run(down, "events", "list")
    finally:
        db.open_pool(database_url, name="web", max_size=16)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: PostgreSQL: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


# --- subscriptions show ---


def test_subscriptions_show_has_state_access_owed_and_history_with_sources(app, client, conn, broker):
    now = int(time.time())
    created = deliver(client, obj=subscription_obj(), created=now - 60)
    past_due = deliver(client, "customer.subscription.updated", subscription_obj(status="past_due"), created=now)
    drain(broker)

    doc = run_json(app, "subscriptions", "show", "sub_1")
    assert doc["subscription"]["status"] == "past_due"
    assert doc["subscription"]["access"] == "restricted"
    assert doc["subscription"]["owed_amount"] is None
    assert [(c["source"], c["source_id"]) for c in doc["changes"]] == [
        ("webhook", created["id"]),
        ("webhook", past_due["id"]),
    ]
    assert doc["changes"][1]["after"]["access"] == "restricted"
    assert {e["id"] for e in doc["events"]} == {created["id"], past_due["id"]}

    result = run(app, "subscriptions", "show", "sub_1")
    assert result.exit_code == 0
    out = result.stdout
    assert "restricted" in out
    assert "owed amount" in out
    assert "history (2 changes, oldest first)" in out
    assert "access: full -> restricted" in out
    assert f"[webhook {past_due['id']}]" in out


@pytest.mark.parametrize(
    "args",
    [
        ["events", "list", "--since", "99999999d"],
        ["events", "list", "--until", "99999999999w"],
        ["events", "replay", "--status", "failed", "--since", "99999999d"],
        ["events", "list", "--limit", "0"],
        ["events", "list", "--since", "not-a-time"],
        ["subscriptions", "show", "sub_1", "--history", "-1"],
    ],
)
def test_an_option_out_of_range_exits_2_with_one_line(app, conn, args):
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1


def test_table_output_escapes_control_characters_and_cuts_long_ids(app, client, conn):
    hostile = make_event(event_id="evt_fake\nevt_forged  customer.created  processed  1  " + "x" * 200)
    assert post_event(client, hostile).status_code == 200
    result = app.test_cli_runner().invoke(args=["events", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2  # the header and one row: the newline did not make a second
    assert "evt_fake\\nevt_forged" in lines[1]
    assert "…" in lines[1]
    assert len(lines[1]) < 250
