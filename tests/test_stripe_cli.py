"""The commands that ask Stripe: reconcile run, events fetch and backfill, subscriptions refresh."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sim import SIM_KEY, running_simulator

from subsync import config
from webhooks import create_app


@pytest.fixture
def sim_app(conn, broker):
    with running_simulator() as (sim, url):
        settings = dataclasses.replace(config.load(), stripe_api_key=SIM_KEY, stripe_api_base=url)
        yield sim, create_app(settings, commands=True)


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def test_reconcile_run_json_is_one_document_with_the_run_figures(sim_app, conn):
    sim, app = sim_app
    sim.create_subscription(sim.create_customer(email="a@example.com")["id"])
    result = invoke(app, "reconcile", "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["status"], report["scanned"], report["created"]) == ("succeeded", 1, 1)


def test_reconcile_dry_run_prints_what_it_would_change_and_changes_nothing(sim_app, conn):
    sim, app = sim_app
    sub = sim.create_subscription(sim.create_customer(email="a@example.com")["id"])["id"]
    result = invoke(app, "reconcile", "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"would change {sub} (new)" in result.output
    assert conn.execute("SELECT count(*) AS n FROM subscriptions").fetchone()["n"] == 0


def test_reconcile_without_a_stripe_key_fails_in_one_line(conn, broker):
    app = create_app(dataclasses.replace(config.load(), stripe_api_key=None), commands=True)
    result = invoke(app, "reconcile", "run")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: STRIPE_API_KEY is not set: the reconciler, backfill and fetch need a secret or restricted key"
    ]


def test_fetch_ingests_once_and_an_unknown_event_exits_1(sim_app, conn):
    sim, app = sim_app
    sim.create_customer(email="a@example.com")
    event_id = sim.all_events()[-1]["id"]
    assert invoke(app, "events", "fetch", event_id).output.strip() == f"{event_id}: stored and queued"
    assert invoke(app, "events", "fetch", event_id).output.strip() == f"{event_id}: already stored"
    missing = invoke(app, "events", "fetch", "evt_nope")
    assert missing.exit_code == 1
    assert "Stripe has no event evt_nope" in missing.output


def test_backfill_reports_what_it_recovered(sim_app, conn):
    sim, app = sim_app
    sim.create_subscription(sim.create_customer(email="a@example.com")["id"])
    # The simulator's history starts 40 days ago (tests/sim.py), to the second:
    # a window of exactly 40 days could start after it.
    result = invoke(app, "events", "backfill", "--since", "41d", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["recovered"] == report["listed"] == len(sim.all_events())
    bad = invoke(app, "events", "backfill", "--since", "yesterday-ish")
    assert bad.exit_code == 2


def test_refresh_prints_its_counts(sim_app, conn):
    _, app = sim_app
    result = invoke(app, "subscriptions", "refresh", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checked"] == 0
