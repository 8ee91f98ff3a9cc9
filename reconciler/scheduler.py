"""The scheduler process (Procfile `scheduler`): `python -m reconciler.scheduler`.

One APScheduler BlockingScheduler in UTC. Every job takes a PostgreSQL
advisory lock first, so any number of scheduler processes may run: each
tick's work is done once. Jobs are short or commit as they go, so a
scheduler killed mid-job loses nothing: the next tick starts cleanly.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from psycopg_pool import ConnectionPool

from reconciler import grace
from reconciler.locks import exclusive
from reconciler.stripe_api import StripeApi, make_api
from subsync import config, db, logs
from worker import outbox

log = logs.get_logger(__name__)

OUTBOX_SWEEP_EVERY_S = 15
ACCESS_REFRESH_EVERY_S = 60


def guarded(pool: ConnectionPool[Any], job: str, fn: Callable[[], object]) -> Callable[[], None]:
    """Wrap `fn` so it runs under the job's lock and never kills the scheduler."""

    def run() -> None:
        try:
            with exclusive(pool, job) as got:
                if not got:
                    log.debug("job_skipped", job=job, reason="another scheduler holds the lock")
                    return
                fn()
        except Exception:
            log.exception("job_failed", job=job)

    run.__name__ = f"guarded_{job}"
    return run


def stripe_api_or_none(settings: config.Settings) -> StripeApi | None:
    """The Stripe client when STRIPE_API_KEY is set; the jobs that need it say so in the log otherwise."""
    if not settings.stripe_api_key:
        log.warning("stripe_api_key_missing", effect="grace ends without asking Stripe; no reconcile or backfill")
        return None
    return make_api(settings)


def build(settings: config.Settings, pool: ConnectionPool[Any]) -> BlockingScheduler:
    scheduler = BlockingScheduler(
        timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
    )
    scheduler.add_job(
        guarded(pool, "outbox_sweep", lambda: outbox.sweep(pool)),
        IntervalTrigger(seconds=OUTBOX_SWEEP_EVERY_S),
        id="outbox_sweep",
    )
    api = stripe_api_or_none(settings)
    scheduler.add_job(
        guarded(pool, "access_refresh", lambda: grace.refresh(pool, grace=settings.grace_period, api=api)),
        IntervalTrigger(seconds=ACCESS_REFRESH_EVERY_S),
        id="access_refresh",
    )
    return scheduler


def main() -> None:
    settings = config.load()
    logs.configure(settings.log_format)
    pool = db.open_pool(settings.database_url, name="scheduler", max_size=4, timeout=30)
    scheduler = build(settings, pool)

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
