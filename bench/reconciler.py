"""Reconciling 100,000 subscriptions served by the project's simulator, as an operator runs it.

`python -m bench.reconciler [--subscriptions N | --quick] [--drift 0.01]`

The simulator runs as its own process (`python -m stripesim`) holding N
subscriptions (`/_sim/bulk_create`). On a fresh database, three runs of
`flask --app webhooks reconcile run --json`, each a process of its own with
the product's default pacing (reconciler/stripe_api.py, 25 pages/s):

1. create: the table is empty, every subscription is created;
2. repair: a fraction of the rows drifted locally (status or period, with an
   older Stripe time, as after a missed webhook) and must be repaired;
3. steady: nothing drifted, nothing is written.

Per run: wall time, pages, what the run saw and changed, the reconciler
process's peak memory and CPU (from its rusage when it is reaped: exact, not
sampled) and PostgreSQL's CPU (the bench database's backends, sampled). The
simulator's memory and CPU are reported apart: they are the test double's,
not the product's. The targets are absolute, so this machine's speed on the
operations they were set with is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.common import (
    BIN,
    ROOT,
    Target,
    bench_database,
    bench_env,
    cpu_seconds,
    free_port,
    peak_rss_mb,
    print_table,
    print_targets,
    record,
    start,
    stop,
    wait_until,
)
from bench.webhook_load import event_templates, print_reference, reference_costs
from stripesim.control import SimControl
from subsync.stripe_api import DEFAULT_MAX_RPS, PAGE_SIZE

SIM_KEY = "sk_test_bench"
FULL = 100_000
QUICK = 5_000
MONTH_S = 30 * 86400
# Every 25th subscription canceled: `status=all` lists them too.
CANCELED_EVERY = 25
TARGET_WALL_S = 120.0
TARGET_PEAK_MB = 250.0
RUN_TIMEOUT_S = 600.0


@dataclass
class RunResult:
    name: str
    wall_s: float
    pages: int
    scanned: int
    created: int
    drifted: int
    fixed: int
    missing_in_stripe: int
    left_alone_newer: int
    peak_mb: float
    cpu_s: float
    postgres_cpu_s: float
    simulator_cpu_s: float


def start_simulator(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = start(
        [str(BIN / "python"), "-m", "stripesim", "--port", str(port), "--api-key", SIM_KEY, "--seed", "1"],
        dict(os.environ),
        log=log,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the simulator exited ({proc.returncode}); see {log}")
        return "ready" in log.read_text()

    if not wait_until(ready, timeout=30):
        stop(proc)
        raise RuntimeError(f"the simulator did not start; see {log}")
    return proc, url


class BackendCpu:
    """CPU of the PostgreSQL backends serving one database, sampled while they live.

    A backend's CPU is gone from /proc once it exits, so each is read every
    `interval` and its last reading kept: at most the last interval of a
    backend's life is missed. Only this database's backends are counted (their
    process title names it), not the other work sharing the server.
    """

    def __init__(self, database: str, interval: float = 0.1) -> None:
        self._database = database.encode()
        self._interval = interval
        self._last: dict[int, float] = {}
        self._first: dict[int, float] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _backends(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read()
            except OSError:
                continue
            if title.startswith(b"postgres:") and self._database in title:
                pids.append(int(entry))
        return pids

    def _sample(self) -> None:
        for pid in self._backends():
            value = cpu_seconds([pid])
            self._first.setdefault(pid, value)
            self._last[pid] = max(value, self._last.get(pid, 0.0))

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            self._sample()

    def __enter__(self) -> BackendCpu:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self._last[pid] - self._first[pid] for pid in self._last)


def reconcile_once(name: str, env: dict[str, str], db_name: str, sim: subprocess.Popen[bytes]) -> RunResult:
    """One `flask reconcile run --json`, reaped with wait4 for its exact peak RSS and CPU."""
    sim_cpu = cpu_seconds([sim.pid])
    started = time.monotonic()
    with BackendCpu(db_name) as pg:
        proc = subprocess.Popen(
            [str(BIN / "flask"), "--app", "webhooks", "reconcile", "run", "--json"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # communicate() would reap the child and lose its rusage: drain the
        # pipes in threads, reap with wait4 here.
        out: dict[str, bytes] = {}
        readers = [
            threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()))
            for k, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for reader in readers:
            reader.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        for reader in readers:
            reader.join(RUN_TIMEOUT_S)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"reconcile run failed ({proc.returncode}): {out.get('stderr', b'').decode()[-2000:]}")
    report = json.loads(out["stdout"])
    if report["status"] != "succeeded":
        raise RuntimeError(f"reconcile run {report['run_id']} {report['status']}: {report.get('error')}")
    scanned = int(report["scanned"])
    return RunResult(
        name=name,
        wall_s=wall,
        # Stripe's page size is the maximum, 100; an exact multiple ends on a
        # full page with has_more false, so no extra empty page is fetched.
        pages=max(1, math.ceil(scanned / PAGE_SIZE)),
        scanned=scanned,
        created=int(report["created"]),
        drifted=int(report["drifted"]),
        fixed=int(report["fixed"]),
        missing_in_stripe=int(report["missing_in_stripe"]),
        left_alone_newer=int(report["left_alone_newer"]),
        peak_mb=usage.ru_maxrss / 1024,  # KB on Linux
        cpu_s=usage.ru_utime + usage.ru_stime,
        postgres_cpu_s=pg.seconds,
        simulator_cpu_s=cpu_seconds([sim.pid]) - sim_cpu,
    )


def drift_rows(url: str, fraction: float) -> int:
    """Make a fraction of our rows wrong and older than Stripe's, as if webhooks had been missed."""
    with psycopg.connect(url, autocommit=True) as conn:
        total = conn.execute("SELECT count(*) FROM subscriptions").fetchone()[0]
        k = max(1, round(total * fraction))
        conn.execute(
            """UPDATE subscriptions s
                  SET status = CASE WHEN s.status = 'active' THEN 'past_due' ELSE s.status END,
                      current_period_end = s.current_period_end - interval '1 month',
                      stripe_updated_at = s.stripe_updated_at - interval '1 hour'
                WHERE s.id IN (SELECT id FROM subscriptions ORDER BY random() LIMIT %s)""",
            (k,),
        )
        return k


def aged(url: str, since: datetime) -> int:
    """Rows whose access moved with the clock since `since`: a period end, or the end of its grace, passed.

    The reconciliation compares the access the rules derive now, so such a
    row is drift too (the scheduler's access refresh, not run here, would
    have moved it within the minute).
    """
    grace = timedelta(hours=72)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT count(*) FROM subscriptions
                WHERE current_period_end > %(since)s AND current_period_end <= now()
                   OR current_period_end + %(grace)s > %(since)s AND current_period_end + %(grace)s <= now()""",
            {"since": since, "grace": grace},
        ).fetchone()
    return int(row[0]) if row else 0


def check(result: RunResult, *, n: int, created: int, drifted: int, aged: int = 0) -> None:
    """A bench that measured the wrong work is worse than none."""
    expected = {"scanned": n, "created": created, "missing_in_stripe": 0}
    wrong = {k: (getattr(result, k), v) for k, v in expected.items() if getattr(result, k) != v}
    for k in ("drifted", "fixed"):
        if not drifted <= getattr(result, k) <= drifted + aged:
            wrong[k] = (getattr(result, k), f"{drifted} to {drifted + aged}")
    if wrong:
        raise RuntimeError(f"run {result.name}: (measured, expected) {wrong}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconciler", description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=FULL, help=f"default {FULL:,}")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK:,} subscriptions")
    parser.add_argument("--drift", type=float, default=0.01, help="fraction of rows drifted before run 2")
    args = parser.parse_args(argv)
    n = QUICK if args.quick else args.subscriptions

    # The targets are absolute: this machine's speed is printed beside them.
    reference = reference_costs(event_templates())
    logs = ROOT / "bench" / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sim, sim_url = start_simulator(logs / "reconciler-stripesim.log")
    try:
        control = SimControl(sim_url, timeout=600, api_key=SIM_KEY)
        seeded = time.monotonic()
        control.bulk_create(n, spread_seconds=MONTH_S, canceled_every=CANCELED_EVERY, return_ids=False)
        seed_s = time.monotonic() - seeded
        with bench_database("reconciler") as url:
            env = bench_env(url, STRIPE_API_BASE=sim_url, STRIPE_API_KEY=SIM_KEY)
            db_name = url.rsplit("/", 1)[1]
            # Each run's rows were last derived during the run before it.
            before_create = datetime.now(UTC)
            results = [reconcile_once("create (empty table)", env, db_name, sim)]
            check(results[-1], n=n, created=n, drifted=0)
            k = drift_rows(url, args.drift)
            before_repair = datetime.now(UTC)
            results.append(reconcile_once(f"repair ({k:,} drifted)", env, db_name, sim))
            check(results[-1], n=n, created=0, drifted=k, aged=aged(url, before_create))
            results.append(reconcile_once("steady (no drift)", env, db_name, sim))
            check(results[-1], n=n, created=0, drifted=0, aged=aged(url, before_repair))
        sim_peak = peak_rss_mb([sim.pid])
    finally:
        stop(sim)

    pacing_s = results[0].pages / DEFAULT_MAX_RPS
    print_table(
        f"Reconciler: {n:,} subscriptions from the simulator, product pacing {DEFAULT_MAX_RPS:g} pages/s"
        f" (>= {pacing_s:.0f} s of pacing alone per run)",
        [
            "run",
            "wall s",
            "pages",
            "pages/s",
            "seen",
            "created",
            "repaired",
            "reconciler peak MB",
            "reconciler CPU s",
            "PostgreSQL CPU s",
            "simulator CPU s",
        ],
        [
            [
                r.name,
                round(r.wall_s, 1),
                r.pages,
                round(r.pages / r.wall_s, 1),
                r.scanned,
                r.created,
                r.fixed,
                round(r.peak_mb, 1),
                round(r.cpu_s, 1),
                round(r.postgres_cpu_s, 1),
                round(r.simulator_cpu_s, 1),
            ]
            for r in results
        ],
    )
    print(
        f"\nSimulator (the test double, not the product): peak memory {sim_peak:.0f} MB holding {n:,}"
        f" subscriptions, seeded in {seed_s:.1f} s. Load average at the end {os.getloadavg()[0]:.1f}"
        f" on {os.cpu_count()} CPUs: wall times grow with other load, CPU seconds much less."
    )
    print_reference(reference)
    slowest = max(r.wall_s for r in results)
    peak = max(r.peak_mb for r in results)
    met = print_targets(
        [
            Target(f"reconciliation of {n:,}, slowest run (s)", slowest, TARGET_WALL_S, "<="),
            Target("reconciler peak memory (MB)", peak, TARGET_PEAK_MB, "<="),
        ]
    )
    if n != FULL:
        print(f"\n(the targets are for {FULL:,} subscriptions; this run had {n:,})")
    record(
        "reconciler",
        {
            "subscriptions": n,
            "max_rps": DEFAULT_MAX_RPS,
            "pacing_s": pacing_s,
            "seed_s": seed_s,
            "simulator_peak_mb": sim_peak,
            "runs": [asdict(r) for r in results],
            "reference_us": reference,
            "targets_met": met,
        },
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
