"""A real LISTEN hears every access change, whatever caused it: webhook, reconcile, grace, replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
from helpers import apply, make_event, post_event, queued_ids, subscription_obj
from sim import DAY, api_for, running_simulator

from reconciler import grace, reconcile
from subsync import db

GRACE = timedelta(hours=72)


def heard(listener, timeout=1.0):
    return [json.loads(n.payload) for n in listener.notifies(timeout=timeout, stop_after=None)]


def source_of_last_change(conn, sub_id):
    return conn.execute(
        "SELECT source FROM subscription_changes WHERE subscription_id = %s ORDER BY id DESC LIMIT 1", (sub_id,)
    ).fetchone()["source"]


def test_each_source_of_an_access_change_is_heard(app, client, conn, broker, database_url):
    start = int(datetime.now(UTC).timestamp()) - 25 * DAY
    with psycopg.connect(database_url, autocommit=True) as listener, running_simulator(start=start) as (sim, url):
        listener.execute("LISTEN subscription_access")
        api = api_for(url, library_retries=False)

        # reconcile: a subscription we never heard of is created
        customer = sim.create_customer(email="n@example.com")["id"]
        sub = sim.create_subscription(customer)["id"]
        reconcile.run(db.pool(), api, grace=GRACE)
        assert [(n["subscription_id"], n["from"], n["to"]) for n in heard(listener)] == [(sub, None, "full")]
        assert source_of_last_change(conn, sub) == "reconcile"

        # grace: the period passes, renewal unconfirmed
        period_end = conn.execute("SELECT current_period_end FROM subscriptions").fetchone()["current_period_end"]
        grace.refresh(db.pool(), grace=GRACE, api=api, now=period_end + timedelta(hours=1))
        assert [(n["from"], n["to"]) for n in heard(listener)] == [("full", "grace")]
        assert source_of_last_change(conn, sub) == "grace"

        # webhook: Stripe says past_due
        created = sim.now() + 10
        event = make_event("customer.subscription.updated", subscription_obj(sub, status="past_due"), created=created)
        post_event(client, event)
        apply(event["id"])
        assert [(n["from"], n["to"]) for n in heard(listener)] == [("grace", "restricted")]
        assert source_of_last_change(conn, sub) == "webhook"

        # replay: a recovery that failed on a bad migration, replayed after the fix
        recovered = make_event(
            "customer.subscription.updated", subscription_obj(sub, status="active"), created=created + 60
        )
        post_event(client, recovered)
        conn.execute(
            """CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN RAISE EXCEPTION 'bad migration'; END$$;
               CREATE TRIGGER refuse_write BEFORE UPDATE ON subscriptions
               FOR EACH ROW EXECUTE FUNCTION refuse_write();"""
        )
        assert apply(recovered["id"]) == "failed"
        assert heard(listener, timeout=0.3) == []  # rolled back: nothing announced
        conn.execute("DROP TRIGGER refuse_write ON subscriptions; DROP FUNCTION refuse_write();")
        result = app.test_cli_runner().invoke(args=["events", "replay", recovered["id"]])
        assert result.exit_code == 0, result.output
        for event_id in queued_ids(broker):
            apply(event_id)
        assert [(n["from"], n["to"]) for n in heard(listener)] == [("restricted", "full")]
        assert source_of_last_change(conn, sub) == "replay"
