"""The scheduler process (Procfile `scheduler`): `python -m reconciler.scheduler`.

One APScheduler BlockingScheduler in UTC. Every job takes a PostgreSQL
advisory lock first, so any number of scheduler processes may run: each
tick's work is done once. Jobs are short or commit as they go, so a
scheduler killed mid-job loses nothing: the next tick starts cleanly.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from psycopg_pool import ConnectionPool

from reconciler import backfill, grace, reconcile
from subsync import config, db, logs, outbox
from subsync.broker import make_broker
from subsync.queue import EventQueue
from subsync.store import jobs
from subsync.store.jobs import Job
from subsync.stripe_api import StripeApi, make_api

log = logs.get_logger(__name__)

OUTBOX_SWEEP_EVERY_S = 15
ACCESS_REFRESH_EVERY_S = 60
BACKFILL_CRON = "17 * * * *"  # hourly, off the hour when everyone else's jobs run
# The jobs may all run at once, each holding its lock's connection besides its
# work's: reconcile 3 (lock, seen ids, page), backfill 2, sweep 2, refresh 2.
# Fewer, and a long nightly reconciliation would starve the outbox sweep.
POOL_SIZE = 10


def once_per_tick(pool: ConnectionPool[Any], job: Job, fn: Callable[[], object]) -> Callable[[], object]:
    """Run `fn` only if no scheduler ran this job in this minute already.

    The advisory lock stops two runs overlapping; this stops a second
    scheduler whose clock is a few seconds late from running the same
    nightly tick again after the first finished (job_runs' primary key).
    """

    def run() -> object:
        tick = datetime.now(UTC).replace(second=0, microsecond=0)
        with pool.connection() as conn:
            claimed = jobs.claim_tick(conn, job, tick)
        if not claimed:
            log.info("job_skipped", job=job, reason="already run for this tick", tick=tick.isoformat())
            return None
        return fn()

    return run


def guarded(pool: ConnectionPool[Any], job: Job, fn: Callable[[], object]) -> Callable[[], None]:
    """Wrap `fn` so it runs under the job's lock and never kills the scheduler."""

    def run() -> None:
        try:
            with jobs.exclusive(pool, job) as got:
                if not got:
                    log.debug("job_skipped", job=job, reason="another scheduler holds the lock")
                    return
                fn()
        except Exception:
            log.exception("job_failed", job=job)

    run.__name__ = f"guarded_{job}"
    return run


def _logged(job: str, fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except reconcile.AlreadyRunning:
            log.info("job_skipped", job=job, reason="another run holds the lock")
        except Exception:
            log.exception("job_failed", job=job)

    return run


def stripe_api_or_none(settings: config.Settings) -> StripeApi | None:
    """The Stripe client when STRIPE_API_KEY is set; the jobs that need it say so in the log otherwise."""
    if not settings.stripe_api_key:
        log.warning("stripe_api_key_missing", effect="grace ends without asking Stripe; no reconcile or backfill")
        return None
    return make_api(settings)


def build(settings: config.Settings, pool: ConnectionPool[Any], queue: EventQueue) -> BlockingScheduler:
    scheduler = BlockingScheduler(
        timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
    )
    scheduler.add_job(
        guarded(pool, "outbox_sweep", lambda: outbox.sweep(pool, queue)),
        IntervalTrigger(seconds=OUTBOX_SWEEP_EVERY_S),
        id="outbox_sweep",
    )
    api = stripe_api_or_none(settings)
    scheduler.add_job(
        guarded(pool, "access_refresh", lambda: grace.refresh(pool, grace=settings.grace_period, api=api)),
        IntervalTrigger(seconds=ACCESS_REFRESH_EVERY_S),
        id="access_refresh",
    )
    if api is not None:
        # reconcile.run takes the "reconcile" lock itself (the CLI shares it),
        # so only the per-tick guard is added here.
        nightly = once_per_tick(pool, "reconcile", lambda: reconcile.run(pool, api, grace=settings.grace_period))
        scheduler.add_job(
            _logged("reconcile", nightly),
            CronTrigger.from_crontab(settings.reconcile_cron, timezone="UTC"),
            id="reconcile",
        )
        scheduler.add_job(
            guarded(pool, "backfill", once_per_tick(pool, "backfill", lambda: backfill.backfill(pool, api, queue))),
            CronTrigger.from_crontab(BACKFILL_CRON, timezone="UTC"),
            id="backfill",
        )
    return scheduler


def main() -> None:
    settings = config.load()
    logs.configure(settings.log_format)
    pool = db.open_pool(settings.database_url, name="scheduler", max_size=POOL_SIZE, timeout=30)
    scheduler = build(settings, pool, EventQueue(make_broker(settings)))

    def stop(signum: int, _frame: object) -> None:
        log.info("scheduler_stopping", signal=signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler_started", jobs=[job.id for job in scheduler.get_jobs()])
    scheduler.start()
    db.close_pool()


if __name__ == "__main__":
    main()
