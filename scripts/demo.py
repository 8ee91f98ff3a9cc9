"""`make demo`: the whole product on the local Stripe simulator, then a table.

Starts the simulator and the Procfile's release, web, worker and scheduler,
tells a three-month story for 31 customers through Stripe's side only
(sign-ups, trials, products granting features, a monthly base with a
yearly add-on on flexible billing, a connected account's customer, renewals, a failed payment that
recovers, dunning that ends suspended with an owed amount, a refund, a
lost chargeback, cancellations, a one-off checkout, a suspended customer
reactivated, a webhook lost on the way), lets the nightly reconciliation
repair what was lost, prints every subscription, the ledger and what the
application's gating query answers, checks them against the simulator's
truth, and stops everything it started.

The simulator's clock starts 80 days in the past and the story ends at the
real now (access depends on the wall clock), between two renewals.

It uses a database of its own (DEMO_DATABASE, default subsync_demo), which
it drops and creates again, a queue namespace of its own, free ports, and
writes its processes' logs to DEMO_LOGS (default .demo/).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import requests
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stripesim.control import SimControl  # noqa: E402
from subsync.access import access_for  # noqa: E402
from subsync.stripe_objects import SubscriptionSnapshot, parse_subscription  # noqa: E402

BIN = Path(sys.executable).parent
LOGS = Path(os.environ.get("DEMO_LOGS") or ROOT / ".demo")
DB = os.environ.get("DEMO_DATABASE") or "subsync_demo"
ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgresql://root@127.0.0.1:5432/{DB}"
SECRET = "whsec_demo"
API_KEY = "sk_test_demo"
DAY = 86400
GRACE = timedelta(hours=72)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


class Processes:
    """Everything the demo starts, each in its own process group, stopped at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: str) -> None:
        log = (LOGS / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            command, shell=True, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.running.append((name, proc))

    def run(self, command: str) -> str:
        result = subprocess.run(
            command, shell=True, cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise SystemExit(f"demo: `{command}` failed:\n{result.stderr}")
        return result.stdout

    def stop_all(self) -> None:
        """TERM every process group, wait until each group is empty, KILL what lingers.

        Waiting on the shell is not enough: it dies at once while granian and
        dramatiq are still shutting down gracefully.
        """
        for _, proc in reversed(self.running):
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for name, proc in self.running:
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(proc.pid):
                say(f"{name} did not stop in time: killing it")
                _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        self.running.clear()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """True while any process of the group runs (zombies of a dead leader aside)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    states = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            states.append(fields[0])
    return any(state != "Z" for state in states)


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def wait_until(what: str, predicate, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (requests.RequestException, psycopg.Error):
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what} (logs in {LOGS})")


@contextmanager
def database() -> Iterator[psycopg.Connection]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (DB,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{DB}"')
        admin.execute(f'CREATE DATABASE "{DB}"')
    yield


def drained(conn: psycopg.Connection, sim: SimControl) -> bool:
    sim.flush(timeout=30)
    row = conn.execute("SELECT count(*) AS n FROM stripe_events WHERE status IN ('received', 'processing')").fetchone()
    return row["n"] == 0


def latest_invoice(sim: SimControl, subscription: str) -> str:
    [sub] = [s for s in sim.truth(["subscriptions"])["subscriptions"] if s["id"] == subscription]
    return str(sub["latest_invoice"])


def sign_ups(sim: SimControl, roles: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Day 0: the catalogue's features, 30 customers on the platform, one on a connected account."""
    say("day 0: Premium grants 12 features (Stripe Entitlements), Priority Support one more")
    for n in range(1, 13):
        sim.attach_feature("prod_premium", sim.create_feature(f"premium-{n:02d}", f"Premium feature {n}")["id"])
    sim.attach_feature("prod_addon", sim.create_feature("priority-support", "Priority support")["id"])
    say("day 0: 30 customers sign up for the Premium Plan (29.99 a month): 24 monthly, 4 on a 14-day trial, 2 yearly")
    subs: list[str] = []
    customer_of: dict[str, str] = {}
    for i in range(30):
        customer = sim.create_customer(email=f"customer{i:02d}@example.com", name=f"Customer {i:02d}")
        kwargs: dict[str, object] = {}
        if 24 <= i < 28:
            kwargs["trial_days"] = 14
        if i >= 28:
            kwargs["price"] = "price_premium_yearly"
        if i == 9:  # Priority Support as a yearly add-on: each item keeps its own period
            kwargs["items"] = [{"price": "price_premium_monthly"}, {"price": "price_addon_yearly"}]
            kwargs["billing_mode"] = "flexible"
        subscription = sim.create_subscription(customer["id"], **kwargs)["id"]
        subs.append(subscription)
        customer_of[subscription] = customer["id"]
        sim.advance(60)
    roles[subs[9]] = "monthly base, yearly add-on (flexible billing)"
    say("day 0: a connected account (Connect) signs up a customer of its own")
    account = sim.create_account(business_name="Acme Studio")["id"]
    connected = sim.create_customer(email="studio-client@example.com", name="Studio Client", account=account)
    roles[sim.create_subscription(connected["id"], account=account)["id"]] = "a connected account's customer"
    return subs, customer_of


def story(sim: SimControl, conn: psycopg.Connection, procs: Processes) -> dict[str, str]:
    """Drive Stripe's side. Returns the roles of a few subscriptions worth pointing at."""
    roles: dict[str, str] = {}
    subs, customer_of = sign_ups(sim, roles)

    one_off = sim.create_checkout_session(customer=customer_of[subs[5]], mode="payment", amount_total=4900)
    sim.complete_checkout_session(one_off["id"])
    abandoned = sim.create_checkout_session(customer=customer_of[subs[6]], mode="payment", amount_total=4900)
    sim.expire_checkout_session(abandoned["id"])

    roles[subs[0]] = "card declined once, Smart Retries recovers"
    sim.fail_next_payments(customer_of[subs[0]], n=1)
    roles[subs[1]] = "card declined, pays with a new card"
    sim.fail_next_payments(customer_of[subs[1]], until_new_card=True)
    for s in subs[2:4]:
        roles[s] = "dunning ends canceled: suspended, owes the days used"
        sim.fail_next_payments(customer_of[s], until_new_card=True)
    roles[subs[4]] = "cancels at period end"
    sim.cancel(subs[4], at_period_end=True)

    say("month 1: renewals, one retry that succeeds, dunning begins for three customers")
    sim.advance(32 * DAY)
    sim.pay_open_invoice(subs[1])
    say("month 1: a refund of 10.00 made in the dashboard; a chargeback, lost")
    roles[subs[10]] = "10.00 of a payment refunded"
    sim.refund(latest_invoice(sim, subs[10]), amount=1000)
    roles[subs[11]] = "a payment disputed, the dispute lost"
    sim.close_dispute(sim.dispute(sim.charges(customer=customer_of[subs[11]])["data"][0]["id"])["id"], won=False)
    wait_until("month 1 to be applied", lambda: drained(conn, sim), 120)

    say("month 2: one customer cancels at once; dunning ends for two")
    roles[subs[7]] = "cancels at once"
    sim.cancel(subs[7])
    sim.advance(30 * DAY)
    wait_until("month 2 to be applied", lambda: drained(conn, sim), 120)

    reactivate(sim, conn, procs, subs[2], customer_of[subs[2]], roles=roles)

    say("month 3: a webhook is lost on the way (a customer turns off auto-renewal)")
    roles[subs[8]] = "webhook lost: repaired by the reconciliation"
    sim.configure_delivery(drop_rate=1.0)
    sim.cancel(subs[8], at_period_end=True)
    sim.flush(timeout=10)
    sim.configure_delivery(drop_rate=0.0)
    remaining = int(time.time()) - 60 - sim.now()
    sim.advance(max(0, remaining))
    wait_until("month 3 to be applied", lambda: drained(conn, sim), 120)
    return roles


def reactivate(
    sim: SimControl, conn: psycopg.Connection, procs: Processes, old: str, customer: str, *, roles: dict[str, str]
) -> None:
    """Month 3: a suspended customer comes back with a new card, and pays the owed days on the new first invoice."""
    say(f"month 3: a suspended customer comes back with a new card: subscriptions reactivate {old}")
    sim.attach_new_card(customer)
    print(procs.run(f"flask --app webhooks subscriptions reactivate {old}").rstrip())
    done = json.loads(procs.run(f"flask --app webhooks subscriptions reactivate {old} --json"))
    say(f"run again, it charges nothing more: {'an earlier run made them' if done['already'] else 'made again?!'}")
    wait_until("the reactivation's first invoice to be applied", lambda: drained(conn, sim), 120)
    roles[old] = "suspended, then reactivated: owed amount settled"
    roles[done["new_subscription_id"]] = f"the reactivation of {old}: first invoice = period + owed days"


def stored_items(conn: psycopg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Each subscription's items as the database holds them."""
    items: dict[str, list[dict[str, Any]]] = {}
    for item in conn.execute(
        "SELECT subscription_id, id, price_id, current_period_end, account FROM subscription_items ORDER BY id"
    ):
        items.setdefault(item["subscription_id"], []).append(item)
    return items


def equal_to_stripe(
    r: dict[str, Any], items: list[dict[str, Any]], t: SubscriptionSnapshot | None, now: datetime
) -> bool:
    """The row and its items as Stripe's subscription says: state, period, access, account, every item."""
    if t is None:
        return False
    state = (r["status"], r["current_period_end"], r["cancel_at_period_end"], r["account"])
    if state != (t.status, t.current_period_end, t.cancel_at_period_end, t.account):
        return False
    if r["access"] != access_for(t.status, t.current_period_end, t.cancellation_reason, now, GRACE):
        return False
    ours = sorted((i["id"], i["price_id"], i["current_period_end"], i["account"]) for i in items)
    return ours == sorted((i.id, i.price_id, i.current_period_end, t.account) for i in t.items)


def item_lines(items: list[dict[str, Any]]) -> list[str]:
    """A subscription's items and the end of each one's period, for one with more than one."""
    return [f"{'':<25}item {i['price_id']}, its period to {i['current_period_end']:%Y-%m-%d}" for i in items]


def report(conn: psycopg.Connection, sim: SimControl, roles: dict[str, str]) -> bool:
    rows = conn.execute(
        "SELECT s.*, c.email FROM subscriptions s LEFT JOIN customers c ON c.id = s.customer_id ORDER BY c.email, s.id"
    ).fetchall()
    items = stored_items(conn)
    stripe_side = sim.truth(["subscriptions"], account="all")["subscriptions"]
    truth = {s["id"]: parse_subscription(s, account=s["account"]) for s in stripe_side}
    now = datetime.now(UTC)
    print()
    print(
        f"{'customer':<24} {'subscription':<28} {'account':<22} {'items':>5} {'status':<10} {'access':<10}"
        f" {'period end':<17} {'owed':>7}  note"
    )
    print("-" * 146)
    mismatches = 0
    for r in rows:
        ok = equal_to_stripe(r, items.get(r["id"], []), truth.get(r["id"]), now)
        mismatches += 0 if ok else 1
        owed = f"{r['owed_amount'] / 100:.2f}" if r["owed_amount"] is not None else ""
        period_end = r["current_period_end"].strftime("%Y-%m-%d %H:%M") if r["current_period_end"] else ""
        note = roles.get(r["id"], "")
        if r["cancel_at_period_end"] and not note:
            note = "cancels at period end"
        flag = "" if ok else "  <-- differs from Stripe"
        print(
            f"{(r['email'] or r['customer_id'] or '')[:24]:<24} {r['id']:<28} {r['account'] or 'platform':<22}"
            f" {len(items.get(r['id'], [])):>5} {r['status']:<10} {r['access']:<10}"
            f" {period_end:<17} {owed:>7}  {note}{flag}"
        )
        if len(items.get(r["id"], [])) > 1:
            print("\n".join(item_lines(items[r["id"]])))
    print()
    ledger = conn.execute(
        "SELECT status, count(*) AS n, coalesce(sum(amount), 0) AS total FROM payments GROUP BY status ORDER BY status"
    ).fetchall()
    print("ledger (payments):")
    for row in ledger:
        print(f"  {row['status']:<12} {row['n']:>4} rows  {row['total'] / 100:>10.2f} usd")
    access = conn.execute("SELECT access, count(*) AS n FROM subscriptions GROUP BY access ORDER BY access").fetchall()
    print("access:  " + ", ".join(f"{a['access']} {a['n']}" for a in access))
    events = conn.execute("SELECT status, count(*) AS n FROM stripe_events GROUP BY status ORDER BY status").fetchall()
    print("events:  " + ", ".join(f"{e['status']} {e['n']}" for e in events))
    gating(conn, [r["customer_id"] for r in rows if r["id"] in roles])
    missing = len(set(truth) - {r["id"] for r in rows})
    print()
    if mismatches or missing:
        print(f"{mismatches + missing} of {len(truth)} subscriptions differ from Stripe")
        return False
    print(
        f"all {len(truth)} subscriptions equal Stripe's state"
        " (status, period end, cancel at period end, access, account, every item and its period)"
    )
    return True


def gating(conn: psycopg.Connection, customers: list[str]) -> None:
    """The one query the application gates a feature on, for the customers of the story's roles."""
    print()
    print("the application asks: SELECT access, features, owed_amount FROM customer_access WHERE customer_id = $1")
    asked = conn.execute(
        "SELECT c.email, a.* FROM customer_access a LEFT JOIN customers c ON c.id = a.customer_id"
        " WHERE a.customer_id = ANY(%s) ORDER BY c.email",
        (customers,),
    ).fetchall()
    for row in asked:
        keys = list(row["features"])
        features = ", ".join(keys[:2]) + (f" and {len(keys) - 2} more" if len(keys) > 2 else "") or "no features"
        who = (row["email"] or row["customer_id"])[:26]
        print(f"  {who:<26} {row['access']:<10} owed {row['owed_amount'] / 100:>6.2f}  {features}")


def main() -> int:
    LOGS.mkdir(exist_ok=True)
    web_port, sim_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "QUEUE_NAMESPACE": f"subsync-demo-{os.getpid()}",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": f"http://127.0.0.1:{sim_port}",
        "PORT": str(web_port),
        "WEB_CONCURRENCY": "2",
        "LOG_FORMAT": "json",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    procs = Processes(env)
    lines = procfile()
    start = int(time.time()) - 80 * DAY
    try:
        with database():
            say(f"release: {lines['release']}")
            procs.run(lines["release"])
        sim_cmd = (
            f"{shlex.quote(sys.executable)} -m stripesim --port {sim_port} --api-key {API_KEY}"
            f" --webhook-url http://127.0.0.1:{web_port}/webhooks/stripe --webhook-secret {SECRET}"
            f" --start {start} --seed 42"
        )
        procs.start("stripesim", sim_cmd)
        for name in ("web", "worker", "scheduler"):
            say(f"{name}: {lines[name]}")
            procs.start(name, lines[name])
        wait_until("the web process", lambda: requests.get(f"http://127.0.0.1:{web_port}/readyz", timeout=1).ok)
        sim = SimControl(f"http://127.0.0.1:{sim_port}", api_key=API_KEY)
        wait_until("the simulator", lambda: sim.now() > 0)
        with psycopg.connect(DATABASE_URL, autocommit=True, row_factory=dict_row) as conn:
            roles = story(sim, conn, procs)
            say("the nightly reconciliation runs (here, now): flask --app webhooks reconcile run")
            print(procs.run("flask --app webhooks reconcile run").rstrip())
            wait_until("the repairs to settle", lambda: drained(conn, sim), 60)
            procs.run("flask --app webhooks subscriptions refresh")
            ok = report(conn, sim, roles)
    finally:
        say("stopping everything the demo started")
        procs.stop_all()
    say(f"logs of every process are in {LOGS.relative_to(ROOT) if LOGS.is_relative_to(ROOT) else LOGS}/")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
