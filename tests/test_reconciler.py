"""The reconciler against the project's Stripe simulator, through the stripe library over HTTP."""

from __future__ import annotations

import dataclasses
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import stripe
from helpers import apply, wait_for
from sim import DAY, api_for, running_simulator

from reconciler import backfill, reconcile
from reconciler.bulk import FIRST_ANALYZE_AT, BulkWrites
from subsync import db
from subsync.store import subscriptions
from subsync.store.jobs import LOCK_KEYS
from subsync.stripe_objects import parse_subscription
from subsync.transitions import SubscriptionState, snapshot_access

GRACE = timedelta(hours=72)


@pytest.fixture
def stripe_sim(conn, broker):
    with running_simulator() as (sim, url):
        api = api_for(url)
        api.url = url
        yield sim, api


def run(api, **kwargs):
    return reconcile.run(db.pool(), api, grace=GRACE, **kwargs)


def local(conn):
    return {r["id"]: r for r in conn.execute("SELECT * FROM subscriptions")}


# Every column Stripe's snapshot says; the others are derived, or ours (the mark of a same-second guess).
NOT_STRIPES = ("access", "owed_amount", "stripe_updated_at", "confirm_requested_at")
STRIPE_COLUMNS = [f.name for f in dataclasses.fields(SubscriptionState) if f.name not in NOT_STRIPES]


def assert_equal_to_stripe(conn, sim):
    rows = local(conn)
    now = datetime.now(UTC)
    for sub in sim.truth()["subscriptions"]:
        truth = parse_subscription(sub)
        ours = rows[truth.id]
        for column in STRIPE_COLUMNS:
            assert ours[column] == getattr(truth, column), (truth.id, column)
        assert ours["confirm_requested_at"] is None, truth.id  # Stripe's state applied: nothing left to ask
        # As a snapshot gives it: a grace run out waits for the grace check to ask Stripe.
        assert ours["access"] == snapshot_access(None, truth, now=now, grace=GRACE).value


def new_subscriptions(sim, n, **kwargs):
    subs = []
    for i in range(n):
        customer = sim.create_customer(email=f"c{i}@example.com")
        subs.append(sim.create_subscription(customer["id"], **kwargs))
    return subs


def test_rows_stripe_has_and_we_lack_are_created_and_a_second_run_finds_nothing(stripe_sim, conn):
    sim, api = stripe_sim
    new_subscriptions(sim, 5)
    report = run(api)
    assert (report.status, report.scanned, report.created, report.drifted) == ("succeeded", 5, 5, 0)
    assert_equal_to_stripe(conn, sim)
    again = run(api)
    assert (again.scanned, again.created, again.drifted, again.fixed) == (5, 0, 0, 0)
    runs = conn.execute("SELECT status, scanned, created FROM reconciliation_runs ORDER BY id").fetchall()
    assert [(r["status"], r["scanned"], r["created"]) for r in runs] == [("succeeded", 5, 5), ("succeeded", 5, 0)]


def test_drift_in_every_compared_field_is_repaired_with_an_audit_trail(stripe_sim, conn):
    sim, api = stripe_sim
    renews, cancels_later, cancels_now, fails, trial = new_subscriptions(sim, 5)
    sim.cancel_subscription(trial["id"])
    trial = sim.create_subscription(sim.create_customer(email="t@example.com")["id"], trial_days=14)
    run(api)
    # Stripe moves on while every webhook is lost.
    sim.cancel_subscription(cancels_later["id"], at_period_end=True)
    sim.cancel_subscription(cancels_now["id"])
    sim.fail_next_payments(sim.get_subscription(fails["id"])["customer"], until_new_card=True)
    sim.advance(31 * DAY)
    report = run(api)
    assert report.drifted >= 4
    assert report.fixed == report.drifted
    assert_equal_to_stripe(conn, sim)
    sources = {r["source"] for r in conn.execute("SELECT DISTINCT source FROM subscription_changes")}
    assert sources == {"reconcile"}
    fields = set()
    for change in report.changes:
        fields.update(change["changes"])
    assert {"status", "current_period_end", "cancel_at_period_end", "canceled_at", "ended_at"} <= fields
    assert renews["id"] in {c["subscription_id"] for c in report.changes}
    assert run(api).drifted == 0


def test_rows_we_have_and_stripe_lacks_are_reported_not_touched(stripe_sim, conn):
    sim, api = stripe_sim
    new_subscriptions(sim, 2)
    run(api)
    conn.execute("UPDATE subscriptions SET id = 'sub_ghost' WHERE id = (SELECT min(id) FROM subscriptions)")
    report = run(api)
    assert report.missing_in_stripe == 1
    assert report.missing_ids == ["sub_ghost"]
    assert local(conn)["sub_ghost"]["status"] == "active"


def test_a_dry_run_changes_nothing_and_says_what_it_would_change(stripe_sim, conn):
    sim, api = stripe_sim
    subs = new_subscriptions(sim, 3)
    run(api)
    sim.cancel_subscription(subs[0]["id"])
    before = local(conn)
    report = run(api, dry_run=True)
    assert (report.drifted, report.fixed) == (1, 0)
    assert report.changes[0]["subscription_id"] == subs[0]["id"]
    assert report.changes[0]["changes"]["status"] == ["active", "canceled"]
    assert local(conn) == before
    assert conn.execute("SELECT dry_run FROM reconciliation_runs ORDER BY id DESC LIMIT 1").fetchone()["dry_run"]


def test_a_webhook_newer_than_the_page_is_left_alone(stripe_sim, conn):
    sim, api = stripe_sim
    (sub,) = new_subscriptions(sim, 1)
    run(api)
    # A webhook applied after the page was fetched: its Stripe time is later
    # than the page's Date.
    conn.execute(
        "UPDATE subscriptions SET status = 'past_due', access = 'restricted', stripe_updated_at = %s",
        (datetime.fromtimestamp(sim.now() + 60, UTC),),
    )
    report = run(api)
    # The rules refuse the older page: that is no drift, and nothing is written.
    assert (report.drifted, report.fixed, report.left_alone_newer) == (0, 0, 1)
    assert local(conn)[sub["id"]]["status"] == "past_due"


def test_a_429_mid_listing_is_backed_off_and_the_run_completes(stripe_sim, conn):
    sim, api = stripe_sim
    new_subscriptions(sim, 250)
    api = api_for(api.url, library_retries=False)  # our own backoff must carry the run through
    sim.set_rate_limit(every=2)
    report = run(api)
    assert (report.status, report.scanned, report.created) == ("succeeded", 250, 250)


def test_stripe_refusing_for_good_fails_the_run_cleanly(stripe_sim, conn):
    sim, api = stripe_sim
    new_subscriptions(sim, 3)
    api = api_for(api.url, library_retries=False)  # fail fast: the library's retries sleep for real
    sim.set_rate_limit(every=1)
    with pytest.raises(stripe.RateLimitError):
        run(api)
    row = conn.execute("SELECT status, error, finished_at FROM reconciliation_runs").fetchone()
    assert row["status"] == "failed"
    assert "RateLimitError" in row["error"]
    assert row["finished_at"] is not None
    sim.set_rate_limit()
    assert run(api).status == "succeeded"


def test_only_one_reconciliation_runs_at_a_time(stripe_sim, conn, database_url):
    _, api = stripe_sim
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEYS["reconcile"],))
        with pytest.raises(reconcile.AlreadyRunning):
            run(api)
        # Released here, not by closing: a closed connection's backend lets
        # go of its locks a moment after the client has moved on.
        other.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEYS["reconcile"],))
    assert run(api).status == "succeeded"


def test_two_reconcilers_started_together_run_once(stripe_sim, conn):
    sim, api = stripe_sim
    new_subscriptions(sim, 150)
    outcomes = []

    def start():
        try:
            outcomes.append(run(api).status)
        except reconcile.AlreadyRunning:
            outcomes.append("refused")

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) in (["refused", "succeeded"], ["succeeded", "succeeded"])
    # Whatever the interleaving, every row was created exactly once.
    assert conn.execute("SELECT count(*) AS n FROM subscription_changes").fetchone()["n"] == 150


def test_a_run_that_died_is_marked_failed_and_the_next_starts_cleanly(stripe_sim, conn):
    _, api = stripe_sim
    conn.execute("INSERT INTO reconciliation_runs (status) VALUES ('running')")
    assert run(api).status == "succeeded"
    rows = conn.execute("SELECT status, error FROM reconciliation_runs ORDER BY id").fetchall()
    assert rows[0]["status"] == "failed"
    assert "interrupted" in rows[0]["error"]


def apply_all_stored(conn):
    ids = [r["id"] for r in conn.execute("SELECT id FROM stripe_events WHERE status = 'received' ORDER BY created_at")]
    for event_id in ids:
        apply(event_id)
    return ids


def test_backfill_after_an_outage_recovers_every_event_and_never_regresses_state(stripe_sim, conn, event_queue):
    sim, api = stripe_sim
    subs = new_subscriptions(sim, 3)
    sim.advance(31 * DAY)  # renewals; every webhook lost
    sim.cancel_subscription(subs[0]["id"])
    # The nightly reconciliation repairs state first...
    run(api)
    assert_equal_to_stripe(conn, sim)
    changes_before = conn.execute("SELECT count(*) AS n FROM subscription_changes").fetchone()["n"]
    # ...then the backfill recovers the lost events, older than that state.
    report = backfill.backfill(db.pool(), api, event_queue)
    kept_by_stripe = [e for e in sim.all_events() if e["created"] >= sim.now() - 30 * DAY]
    assert report.recovered == report.listed == len(kept_by_stripe) > 0
    apply_all_stored(conn)
    assert_equal_to_stripe(conn, sim)
    statuses = {r["status"] for r in conn.execute("SELECT DISTINCT status FROM stripe_events")}
    assert statuses <= {"processed"}
    assert conn.execute("SELECT count(*) AS n FROM subscription_changes").fetchone()["n"] == changes_before
    # The checkpoint moved: the next pass lists only the overlap and recovers nothing.
    again = backfill.backfill(db.pool(), api, event_queue)
    assert again.recovered == 0
    assert again.since == report.checkpoint


def test_fetch_ingests_one_event_once(stripe_sim, conn, event_queue):
    sim, api = stripe_sim
    new_subscriptions(sim, 1)
    event = sim.all_events()[-1]
    assert backfill.fetch(db.pool(), api, event_queue, event["id"]) is True
    assert backfill.fetch(db.pool(), api, event_queue, event["id"]) is False
    assert conn.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 1
    with pytest.raises(stripe.InvalidRequestError):
        backfill.fetch(db.pool(), api, event_queue, "evt_missing")


@pytest.mark.slow
def test_memory_stays_flat_from_2000_to_20000_subscriptions(stripe_sim, conn):
    sim, api = stripe_sim

    def peak_for(n: int) -> int:
        # Without invoices: the invoice pass streams its pages the same way,
        # and traced allocations make a listing of them slow to measure here.
        sim.bulk_create(n, return_ids=False, with_invoices=False)
        tracemalloc.start()
        started = time.monotonic()
        report = run(api)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{report.scanned} subscriptions: peak {peak / 1e6:.2f} MB in {time.monotonic() - started:.1f} s")
        return peak

    small = peak_for(2_000)
    large = peak_for(18_000)  # 20,000 listed in all
    # The peak is a few pages in flight (one decoded page is about 5 MB of
    # the library's OrderedDicts, and one more is read ahead) whatever the
    # count. 18,000 more subscriptions may add under 4 MB (about 220 bytes
    # each): anything kept per subscription (a snapshot, a parsed dict, a
    # row) is far more than that.
    assert large - small < 4_000_000, (small, large)


def test_read_ahead_hands_over_errors_and_stops_with_its_consumer():
    from reconciler.readahead import read_ahead

    def failing():
        yield 1
        raise stripe.APIConnectionError("gone")

    items = read_ahead(failing())
    assert next(items) == 1
    with pytest.raises(stripe.APIConnectionError):
        next(items)  # raised where the next item would have come

    produced, closed = [], threading.Event()

    def endless():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    pages = read_ahead(endless(), depth=1)
    assert next(pages) == 0
    pages.close()  # the consumer stops: the producer thread ends and closes its source
    assert closed.is_set()
    assert len(produced) <= 3  # one handed over, one queued, one waiting to be


def test_the_missing_in_stripe_check_probes_the_listed_ids_never_scans_them_per_subscription(conn):
    # A first run: every row just created, so PostgreSQL has no statistics of
    # either table and may take each for a handful of rows.
    conn.execute(
        "INSERT INTO subscriptions (id, customer_id, status, access, stripe_updated_at)"
        " SELECT 'sub_' || g, 'cus_' || g, 'active', 'full', now() FROM generate_series(1, 5000) g"
    )
    with db.pool().connection() as c:
        subscriptions.start_seen(c)
        subscriptions.add_seen(c, [f"sub_{n}" for n in range(1, 4990)])
        c.execute("ANALYZE reconcile_seen")
        plan = "\n".join(r["QUERY PLAN"] for r in c.execute("EXPLAIN " + subscriptions.NOT_SEEN, (None,)))
        assert list(subscriptions.not_seen(c, account=None)) == sorted(f"sub_{n}" for n in range(4990, 5001))
    assert "Seq Scan on reconcile_seen" not in plan or "Hash Anti Join" in plan, plan


def test_a_run_that_fills_tables_analyzes_them_each_time_its_writes_double(conn):
    def analyzed() -> int:
        row = conn.execute("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'subscriptions'").fetchone()
        return row["analyze_count"]

    start = analyzed()
    bulk = BulkWrites(db.pool(), ("subscriptions",))
    bulk.wrote(FIRST_ANALYZE_AT - 1)
    assert bulk.analyzes == 0
    bulk.wrote(1)
    bulk.wrote(FIRST_ANALYZE_AT - 1)
    assert bulk.analyzes == 1
    bulk.wrote(1)
    assert bulk.analyzes == 2
    bulk.wrote(10 * FIRST_ANALYZE_AT)
    assert bulk.analyzes == 3
    wait_for(lambda: analyzed() >= start + 3)  # the statistics collector reports a little later


def test_a_lost_metadata_only_change_is_repaired_and_named(stripe_sim, conn):
    sim, api = stripe_sim
    (sub,) = new_subscriptions(sim, 1)
    run(api)
    sim.update_subscription_metadata(sub["id"], {"plan": "team"})  # its webhook lost
    dry = run(api, dry_run=True)
    (change,) = dry.changes
    assert change["changes"] == {"metadata": [{}, {"plan": "team"}]}
    report = run(api)
    assert (report.drifted, report.fixed) == (1, 1)
    assert local(conn)[sub["id"]]["metadata"] == {"plan": "team"}
    assert_equal_to_stripe(conn, sim)
    assert run(api).drifted == 0


def test_a_renewal_whose_new_invoice_never_reached_the_row_is_repaired(stripe_sim, conn):
    sim, api = stripe_sim
    (sub,) = new_subscriptions(sim, 1)
    run(api)
    first_invoice = local(conn)[sub["id"]]["latest_invoice_id"]
    sim.advance(31 * DAY)  # renewed; every webhook lost
    run(api)
    renewed = local(conn)[sub["id"]]
    assert renewed["latest_invoice_id"] != first_invoice
    # The renewal as an earlier snapshot gave it: the new period, the old invoice.
    conn.execute(
        "UPDATE subscriptions SET latest_invoice_id = %s, stripe_updated_at = stripe_updated_at - interval '1 hour'",
        (first_invoice,),
    )
    dry = run(api, dry_run=True)
    (change,) = dry.changes
    assert change["changes"] == {"latest_invoice_id": [first_invoice, renewed["latest_invoice_id"]]}
    report = run(api)
    assert (report.drifted, report.fixed) == (1, 1)
    assert_equal_to_stripe(conn, sim)


def test_items_filed_under_another_account_are_refiled(stripe_sim, conn):
    sim, api = stripe_sim
    new_subscriptions(sim, 1)
    run(api)
    conn.execute("UPDATE subscription_items SET account = 'acct_wrong'")
    report = run(api)
    assert (report.drifted, report.fixed) == (1, 1)
    assert report.changes[0]["changes"] == {"items_account": [["acct_wrong"], [None]]}
    assert [r["account"] for r in conn.execute("SELECT account FROM subscription_items")] == [None]
    assert run(api).drifted == 0


def test_a_dry_run_shows_the_item_periods_a_renewal_moves(stripe_sim, conn):
    sim, api = stripe_sim
    (sub,) = new_subscriptions(sim, 1)
    run(api)
    sim.advance(31 * DAY)  # renewed; every webhook lost
    dry = run(api, dry_run=True)
    (change,) = dry.changes
    (item,) = sim.get_subscription(sub["id"])["items"]["data"]
    (row,) = conn.execute("SELECT current_period_start, current_period_end FROM subscription_items").fetchall()

    def listed(start, end):
        return [f"{item['id']}:{item['price']['id']}x{item['quantity']} {start.isoformat()}..{end.isoformat()}"]

    renewed = [datetime.fromtimestamp(item[name], UTC) for name in ("current_period_start", "current_period_end")]
    assert change["changes"]["items"] == [
        listed(row["current_period_start"], row["current_period_end"]),
        listed(*renewed),
    ]
