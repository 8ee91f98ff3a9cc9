"""Crashes during a stream of webhooks: nothing lost, nothing applied twice.

The simulator runs two months of mixed lifecycles (sign-ups, trials, yearly
plans, renewals, failed payments that recover, dunning that cancels,
cancellations) and delivers them as Stripe does: duplicated, resent with new
ids, reordered, 8 at a time, retried on any non-2xx or connection error. The
product runs as the Procfile starts it (granian, `dramatiq worker`) on a
private Redis. While the stream flows, in turn: kill -9 the worker, kill -9
the web, kill -9 and restart Redis (its messages are gone), terminate every
PostgreSQL connection. Then every event is stored and applied once, every
subscription equals Stripe's, and the ledger has no double count.

Each fault is checked to have hit work in flight, so the test cannot pass
because the faults missed: the worker, Redis and PostgreSQL faults first hold
half the subscriptions' locks, so that a worker thread is waiting inside its
transaction when the fault lands (the other threads are wherever they are).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from helpers import ADMIN_URL, NAMESPACE, REDIS_PROXY, SECRET, TEST_DB
from pipeline import drain, ledger_mismatches, mismatches_after_the_minute_job
from processes import kill9, start_redis, start_web, start_worker, stop
from proxy import free_port
from psycopg.rows import dict_row
from sim import DAY, running_simulator

from subsync.store import locks

pytestmark = pytest.mark.slow

CUSTOMERS = 40
SPAN_DAYS = 70
PACE_S = 0.25  # wall time per simulated day while faults are still to come
DELIVERY = {
    "duplicate_rate": 0.2,
    "resend_rate": 0.1,
    "reorder_window": 20,
    "reorder_hold": 0.25,
    "concurrency": 8,
    # Stripe retries for days; compressed here so that no delivery gives up
    # while the web is down.
    "max_attempts": 100,
    "retry_initial": 0.1,
    "retry_max": 1.0,
}
WAIT_S = 30  # bound on waiting for a fault's precondition
FAULT_DAYS = (12, 33, 40, 46)  # simulated days; sign-ups take the first ten


def story(sim: Any, subscriptions: list[str], faults_done: list[threading.Event]) -> None:
    """Sign-ups over ten days, then every day until now, paced while faults are to come.

    Besides Stripe's own events, a few subscriptions get a metadata update
    every day, so that events flow on every day a fault may land.
    """
    kinds: dict[str, int] = {}
    # Real accounts' shapes too: some subscriptions on a connected account,
    # some with a monthly base and a yearly add-on (flexible billing).
    connected = sim.create_account()["id"]
    accounts: dict[str, str | None] = {}
    end = int(time.time()) - 60
    day = 0
    while sim.now() < end:
        if len(kinds) < CUSTOMERS:
            for _ in range(CUSTOMERS // 10):
                i = len(kinds)
                kind = i % 8
                account = connected if kind in (0, 3) and i % 16 < 8 else None
                customer = sim.create_customer(email=f"f{i}@example.com", account=account)["id"]
                kwargs: dict[str, Any] = (
                    {"trial_days": 14} if kind == 1 else {"price": "price_premium_yearly"} if kind == 2 else {}
                )
                if kind == 0:
                    kwargs = {"items": [{"price": "price_premium_monthly"}, {"price": "price_addon_yearly"}]}
                    kwargs["billing_mode"] = "flexible"
                sub = sim.create_subscription(customer, account=account, **kwargs)["id"]
                accounts[sub] = account
                if kind == 3:
                    sim.fail_next_payments(customer, n=1, account=account)  # Smart Retries recovers
                elif kind in (4, 5):
                    sim.fail_next_payments(customer, until_new_card=True)  # 4 pays the next day, 5 ends canceled
                elif kind == 6:
                    sim.cancel_subscription(sub, at_period_end=True)
                kinds[sub] = kind
                subscriptions.append(sub)
        for sub in subscriptions[day % 10 :: 10]:  # an app's own updates: events every day
            sim.update_subscription_metadata(sub, {"last_seen_day": str(day)}, account=accounts[sub])
        for sub, kind in kinds.items():
            status = sim.get_subscription(sub, account=accounts[sub])["status"]
            if kind == 4 and status == "past_due":
                sim.pay_open_invoice(sub)
            elif kind == 7 and day == 45 and status == "active":
                sim.cancel_subscription(sub)
        sim.advance(min(DAY, end - sim.now()))
        day += 1
        to_come = [(d, done) for d, done in zip(FAULT_DAYS, faults_done, strict=True) if not done.is_set()]
        if to_come:
            # A few days past a fault's day, crawl until it is done: on a busy
            # machine the faults take longer, and each needs events flowing.
            fault_day, done = to_come[0]
            done.wait(PACE_S if day < fault_day + 4 else 2.0)


@dataclass
class Evidence:
    """What each fault hit: non-zero, or the fault missed."""

    orphaned_by_worker_kill: int = 0
    refused_while_web_down: int = 0
    messages_lost_with_redis: int = 0
    postgres_connections_terminated: int = 0
    worker_waits_cut: int = 0


@dataclass
class Product:
    """The Redis, web and worker process groups, replaced as faults kill them."""

    env: dict[str, str]
    web_port: int
    redis_port: int
    logs: Path
    web: Any = None
    worker: Any = None
    redis: Any = None
    processes: list[Any] = field(default_factory=list)

    def start_web(self) -> None:
        self.web = start_web(self.web_port, self.env, log=self.logs / "web.log")
        self.processes.append(self.web)

    def start_worker(self) -> None:
        self.worker = start_worker(processes=2, threads=4, env=self.env, log=self.logs / "worker.log")
        self.processes.append(self.worker)

    def start_redis(self) -> None:
        self.redis = start_redis(self.redis_port, log=self.logs / "redis.log")
        self.processes.append(self.redis)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            stop(proc)


@pytest.fixture
def product(database_url: str, tmp_path: Path) -> Iterator[Product]:
    """Redis, web and worker processes; this test process reaches the same Redis through REDIS_PROXY."""
    redis_port = free_port()
    prometheus = tmp_path / "prometheus"  # the web workers' multi-process metrics
    prometheus.mkdir()
    product = Product(
        env={
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(prometheus),
        },
        web_port=free_port(),
        redis_port=redis_port,
        logs=tmp_path,
    )
    shared_redis = REDIS_PROXY.target
    try:
        product.start_redis()
        REDIS_PROXY.retarget("127.0.0.1", redis_port)  # the outbox sweep in drain() sends through it
        product.start_web()
        product.start_worker()
        yield product
    finally:
        product.stop()
        REDIS_PROXY.retarget(*shared_redis)


def count(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    return conn.execute(query, params or None).fetchone()["n"]


def wait_until(predicate: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s: {what}")
        time.sleep(0.02)


# Workers waiting on the blocker's locks, not on each other's: those waits
# last until the blocker lets go, so a count taken later inside the hold is
# never smaller than the one that ended the wait.
WAITING_WORKERS = (
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query LIKE '%%pg_advisory_xact_lock%%'"
    " AND pg_blocking_pids(pid) @> ARRAY[%s::integer]"
)


@contextmanager
def workers_held(watch: psycopg.Connection[Any], subscriptions: list[str]) -> Iterator[Callable[[], int]]:
    """Hold every other subscription's lock until a worker thread waits for one inside its transaction.

    The fault then lands on at least one event certainly in flight, and on
    the other threads wherever they are in theirs. The worker's lock_timeout
    (5 s) bounds how long this may last before events start failing, so the
    fault must land at once.
    """
    blocker = psycopg.connect(watch.info.dsn)
    try:
        locks.lock_subscriptions(blocker, subscriptions[::2])

        def waiting() -> int:
            return count(watch, WAITING_WORKERS, blocker.info.backend_pid)

        wait_until(lambda: waiting() > 0, "a worker thread waiting inside its transaction")
        yield waiting
    finally:
        with suppress(psycopg.Error):  # terminated by the PostgreSQL fault: its locks are gone anyway
            blocker.rollback()
        blocker.close()


def kill_the_worker(product: Product, watch: psycopg.Connection[Any], subs: list[str], evidence: Evidence) -> None:
    with workers_held(watch, subs):
        kill9(product.worker)
        # Nothing else claims events now: these rows are the dead worker's.
        evidence.orphaned_by_worker_kill = count(
            watch, "SELECT count(*) AS n FROM stripe_events WHERE status = 'processing'"
        )
    product.start_worker()


def kill_the_web(product: Product, sim: Any, evidence: Evidence) -> None:
    killed_at = time.time()
    kill9(product.web)

    def refused() -> int:
        return sum(1 for d in sim.delivery.deliveries() if d["error"] and d["at"] > killed_at)

    wait_until(lambda: refused() > 0, "a delivery refused while the web is down")
    evidence.refused_while_web_down = refused()
    product.start_web()


def restart_redis(product: Product, watch: psycopg.Connection[Any], subs: list[str], evidence: Evidence) -> None:
    client = redis.Redis(port=product.redis_port)
    try:
        with workers_held(watch, subs):
            # The bodies of messages queued or in a worker's hands until acked.
            evidence.messages_lost_with_redis = client.hlen(f"{NAMESPACE}:stripe_events.msgs")
            kill9(product.redis)
            product.start_redis()
    finally:
        client.close()


def terminate_postgres_connections(watch: psycopg.Connection[Any], subs: list[str], evidence: Evidence) -> None:
    with (
        workers_held(watch, subs) as waiting,
        psycopg.connect(ADMIN_URL, autocommit=True, row_factory=dict_row) as admin,
    ):
        evidence.worker_waits_cut = waiting()
        evidence.postgres_connections_terminated = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE datname = %s",
            (TEST_DB,),
        ).fetchone()["n"]


def test_kill9_worker_and_web_restart_redis_and_cut_postgres_during_a_stream_loses_and_doubles_nothing(
    conn, database_url, product
):
    evidence = Evidence()
    subs: list[str] = []
    faults_done = [threading.Event() for _ in FAULT_DAYS]
    url = f"http://127.0.0.1:{product.web_port}/webhooks/stripe"
    sim_start = int(time.time()) - SPAN_DAYS * DAY
    with (
        running_simulator(start=sim_start, webhook_urls=[url], webhook_secret=SECRET, delivery=DELIVERY) as (
            sim,
            sim_url,
        ),
        ThreadPoolExecutor(1) as pool,
    ):
        stream = pool.submit(story, sim, subs, faults_done)

        def on_day(day: int) -> None:
            wait_until(lambda: stream.done() or sim.now() >= sim_start + day * DAY, f"day {day}", timeout=60)
            if stream.done():
                stream.result()  # the story's own error, if it failed

        try:
            on_day(FAULT_DAYS[0])  # sign-ups done
            kill_the_worker(product, conn, subs, evidence)
            faults_done[0].set()
            on_day(FAULT_DAYS[1])  # renewals, the first failed payments
            kill_the_web(product, sim, evidence)
            faults_done[1].set()
            on_day(FAULT_DAYS[2])  # Smart Retries, payments recovered
            restart_redis(product, conn, subs, evidence)
            faults_done[2].set()
            on_day(FAULT_DAYS[3])  # cancellations, dunning ending
            terminate_postgres_connections(conn, subs, evidence)  # `conn` too: checks use a new connection
            print(f"last fault on day {(sim.now() - sim_start) // DAY} of {SPAN_DAYS}")
        finally:
            for done in faults_done:
                done.set()
        stream.result(timeout=120)

        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as check:
            drain(check, sim, timeout=120)
            stats = sim.delivery_stats()
            print(f"faults: {evidence}; deliveries: {stats}; logs in {product.logs}")
            assert evidence.orphaned_by_worker_kill > 0
            assert evidence.refused_while_web_down > 0
            assert evidence.messages_lost_with_redis > 0
            assert evidence.worker_waits_cut > 0
            # The blocker, this test's connections, the web's and the worker's pools.
            assert evidence.postgres_connections_terminated >= 4
            assert stats["failed"] == 0, "a delivery gave up"
            assert stats["duplicated"] > 0
            assert stats["resent"] > 0

            stored = {r["id"]: r["status"] for r in check.execute("SELECT id, status FROM stripe_events")}
            emitted = {e["id"] for e in sim.all_events(account="all")}
            lost = emitted - stored.keys()
            assert not lost, f"{len(lost)} of {len(emitted)} events acknowledged but never stored"
            assert stored.keys() <= emitted
            assert set(stored.values()) <= {"processed", "ignored"}
            # Applied once: an event writes at most one audit row per subscription.
            doubled = check.execute(
                "SELECT source_id, subscription_id, count(*) AS n FROM subscription_changes"
                " GROUP BY source_id, subscription_id HAVING count(*) > 1"
            ).fetchall()
            assert doubled == []
            assert ledger_mismatches(check, sim) == []
            assert mismatches_after_the_minute_job(check, sim, sim_url) == []
