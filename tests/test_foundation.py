"""The foundation's promises that are not about one request: schema, start-up, logs."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import make_event, post_event
from processes import ROOT

from subsync import db


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
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn") if (ROOT / ".venv").exists() else "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "webhooks:create_app()",
        ],
        cwd=ROOT,
        env={**os.environ, "STRIPE_WEBHOOK_SECRET": "", "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    reason = [line for line in result.stderr.splitlines() if "STRIPE_WEBHOOK_SECRET" in line]
    assert len(reason) == 1


def test_create_app_refuses_without_a_secret_outside_commands(monkeypatch):
    import pytest

    from subsync import config
    from webhooks import create_app

    settings = config.load({"DATABASE_URL": os.environ["DATABASE_URL"]})
    with pytest.raises(config.ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(settings)


def test_log_lines_carry_the_event_and_never_a_secret_or_the_payload(client, conn, caplog):
    from test_worker_apply import subscription_obj

    from subsync import config
    from worker.apply import apply_event

    event = make_event(obj=subscription_obj("sub_log", metadata={"note": "PAYLOAD-CANARY-4242"}))
    with caplog.at_level("INFO"):
        post_event(client, event)
        apply_event(db.pool(), event["id"], grace=config.load().grace_period)
    records = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    ours = [r for r in records if r.get("event_id") == event["id"]]
    assert {r["event"] for r in ours} >= {"delivery_stored", "event_applied"}
    assert all(r.get("event_type") == event["type"] for r in ours)
    everything = " ".join(str(r.msg) for r in caplog.records)
    assert "PAYLOAD-CANARY-4242" not in everything
    assert "whsec_" not in everything


def test_gunicorn_writes_no_access_line_unless_asked(monkeypatch, tmp_path):
    # The app logs one line per delivery; gunicorn would add its own for every
    # request because logconfig_dict is set.
    import runpy

    from gunicorn.glogging import Logger

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # reading the config sets it otherwise
    logger_class = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["logger_class"]
    written = []
    monkeypatch.setattr(Logger, "access", lambda self, *args: written.append(args))  # the line gunicorn writes
    for accesslog in (None, "-"):
        logger = logger_class.__new__(logger_class)
        logger.cfg = type("Cfg", (), {"accesslog": accesslog})()
        logger.access(None, None, {}, 0)
    assert len(written) == 1  # only with --access-logfile
