"""Recover events Stripe has and we never received, and fetch single events.

Stripe keeps 30 days of events at `GET /v1/events`. The backfill lists them
from a checkpoint (or `--since`), and every id we have not stored goes
through the receiver's own intake (`store_and_queue`): stored once, queued,
applied by the worker under the same ordering rules, so an old event
recovered late never overwrites newer state.

The checkpoint (job_state 'backfill') is the newest `created` listed, less
an overlap, so an event that became visible a little late is still seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from reconciler.stripe_api import StripeApi
from subsync import events, logs
from worker.ingest import store_and_queue

log = logs.get_logger(__name__)

CHECKPOINT = "backfill"
OVERLAP = timedelta(minutes=10)


@dataclass
class BackfillReport:
    since: int | None = None
    listed: int = 0
    recovered: int = 0
    checkpoint: int | None = None


def checkpoint(pool: ConnectionPool[Any]) -> int | None:
    with pool.connection() as conn:
        row = conn.execute("SELECT value FROM job_state WHERE name = %s", (CHECKPOINT,)).fetchone()
    return None if row is None else int(row["value"]["created_gte"])


def _save_checkpoint(pool: ConnectionPool[Any], created_gte: int) -> None:
    with pool.connection() as conn:
        conn.execute(
            """INSERT INTO job_state (name, value) VALUES (%s, %s)
               ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
               WHERE (job_state.value->>'created_gte')::bigint < (EXCLUDED.value->>'created_gte')::bigint""",
            (CHECKPOINT, Jsonb({"created_gte": created_gte})),
        )


def _ingest_missing(pool: ConnectionPool[Any], batch: list[dict[str, Any]]) -> int:
    with pool.connection() as conn:
        stored = {
            r["id"]
            for r in conn.execute("SELECT id FROM stripe_events WHERE id = ANY(%s)", ([e["id"] for e in batch],))
        }
    recovered = 0
    for event in batch:
        if event["id"] in stored:
            continue
        ingested = store_and_queue(pool, events.parse_event(event), events.payload_text(event))
        recovered += int(ingested.new)
    return recovered


def backfill(pool: ConnectionPool[Any], api: StripeApi, *, since: datetime | None = None) -> BackfillReport:
    """Ingest every event Stripe lists since `since` (default: the checkpoint) that we lack."""
    report = BackfillReport(since=int(since.timestamp()) if since else checkpoint(pool))
    newest: int | None = None
    for page in api.event_pages(created_gte=report.since):
        batch = [snapshot.data for snapshot in page]
        report.listed += len(batch)
        newest = max(newest or 0, *(event["created"] for event in batch))
        report.recovered += _ingest_missing(pool, batch)
    if newest is not None:
        report.checkpoint = newest - int(OVERLAP.total_seconds())
        _save_checkpoint(pool, report.checkpoint)
    log.info("backfill_finished", **report.__dict__)
    return report


def fetch(pool: ConnectionPool[Any], api: StripeApi, event_id: str) -> bool:
    """Retrieve one event from Stripe and ingest it; True if it was new to us."""
    event = api.retrieve_event(event_id)
    return store_and_queue(pool, events.parse_event(event), events.payload_text(event)).new
