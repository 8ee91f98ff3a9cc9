"""The foundation's promises that are not about one request: schema, start-up, logs."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import make_event, post_event
from processes import ROOT, procfile_command


def schema_snapshot(conn):
    return (
        conn.execute(
            """SELECT table_name, column_name, data_type, column_default FROM information_schema.columns
            WHERE table_schema = 'public' ORDER BY table_name, column_name"""
        ).fetchall()
        + conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1").fetchall()
    )


def test_db_init_twice_changes_nothing_and_keeps_data(conn, database_url):
    conn.execute("INSERT INTO customers (id, stripe_updated_at) VALUES ('cus_keep', now())")
    before = schema_snapshot(conn)
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "webhooks", "db", "init"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": ""},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "schema applied"
    assert schema_snapshot(conn) == before
    assert conn.execute("SELECT count(*) AS n FROM customers").fetchone()["n"] == 1


def test_db_init_against_a_dead_database_fails_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "webhooks", "db", "init"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": "postgresql://root@127.0.0.1:1/nothing"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "could not apply the schema" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_web_process_refuses_to_start_without_a_webhook_secret():
    argv, variables = procfile_command("web")
    result = subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, **variables, "STRIPE_WEBHOOK_SECRET": "", "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "subsync web: STRIPE_WEBHOOK_SECRET is not set: give one or more whsec_... secrets, comma-separated"
    ]


def test_create_app_refuses_without_a_secret_outside_commands(monkeypatch):
    import pytest

    from subsync import config
    from webhooks import create_app

    settings = config.load({"DATABASE_URL": os.environ["DATABASE_URL"]})
    with pytest.raises(config.ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(settings)


def test_log_lines_carry_the_event_and_never_a_secret_or_the_payload(client, conn, caplog):
    from helpers import apply, subscription_obj

    event = make_event(obj=subscription_obj("sub_log", metadata={"note": "PAYLOAD-CANARY-4242"}))
    with caplog.at_level("INFO"):
        post_event(client, event)
        apply(event["id"])
    records = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    ours = [r for r in records if r.get("event_id") == event["id"]]
    assert {r["event"] for r in ours} >= {"delivery_stored", "event_applied"}
    assert all(r.get("event_type") == event["type"] for r in ours)
    everything = " ".join(str(r.msg) for r in caplog.records)
    assert "PAYLOAD-CANARY-4242" not in everything
    assert "whsec_" not in everything
