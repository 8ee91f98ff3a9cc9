"""The scheduler: each job once per tick however many schedulers run, and a real process sweeping."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import psycopg
import pytest
from helpers import make_event, post_event, wait_for
from processes import ROOT, kill9

from reconciler import scheduler
from subsync import config, db
from subsync.store.jobs import LOCK_KEYS


def test_a_job_runs_once_per_tick_across_schedulers(conn):
    calls = []
    job = scheduler.once_per_tick(db.pool(), "reconcile", lambda: calls.append(1))
    job()
    job()  # a second scheduler firing the same minute
    assert calls == [1]
    assert conn.execute("SELECT count(*) AS n FROM job_runs").fetchone()["n"] == 1


def test_a_guarded_job_is_skipped_while_another_scheduler_holds_its_lock(conn, database_url):
    calls = []
    job = scheduler.guarded(db.pool(), "outbox_sweep", lambda: calls.append(1))
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEYS["outbox_sweep"],))
        job()
        # Released here, not by closing: a closed connection's backend lets
        # go of its locks a moment after the client has moved on.
        other.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEYS["outbox_sweep"],))
    assert calls == []
    job()
    assert calls == [1]


def test_a_failing_job_never_stops_the_scheduler(conn):
    def boom() -> None:
        raise RuntimeError("boom")

    scheduler.guarded(db.pool(), "outbox_sweep", boom)()  # logs, does not raise


def test_the_schedule_has_every_job_when_stripe_is_configured(conn, event_queue):
    settings = dataclasses.replace(config.load(), stripe_api_key="sk_test_x", stripe_api_base="http://127.0.0.1:9")
    jobs = {job.id for job in scheduler.build(settings, db.pool(), event_queue).get_jobs()}
    assert jobs == {"outbox_sweep", "access_refresh", "reconcile", "backfill"}
    without_key = {job.id for job in scheduler.build(config.load(), db.pool(), event_queue).get_jobs()}
    assert without_key == {"outbox_sweep", "access_refresh"}


@pytest.mark.slow
def test_a_real_scheduler_process_sweeps_the_outbox_and_survives_kill_9(client, conn, broker, redis_down):
    event = make_event()
    post_event(client, event)  # Redis is down: stored, not queued
    redis_down.start()
    conn.execute("UPDATE stripe_events SET received_at = now() - interval '1 minute'")

    def start():
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler.scheduler"],
            cwd=ROOT,
            env=os.environ.copy(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    proc = start()
    try:
        wait_for(
            lambda: conn.execute("SELECT enqueued_at FROM stripe_events").fetchone()["enqueued_at"] is not None,
            timeout=40,
        )
    finally:
        kill9(proc)
    # The lock died with the process: a new scheduler takes over at once.
    with psycopg.connect(conn.info.dsn, autocommit=True) as check:
        got = check.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEYS["outbox_sweep"],)).fetchone()[0]
        assert got is True
