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

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import stripe
from psycopg_pool import ConnectionPool

from reconciler import accounts
from subsync import logs
from subsync.envelope import InvalidPayload, payload_text, read_event
from subsync.intake import store_and_queue
from subsync.queue import EventQueue
from subsync.store import events, jobs
from subsync.stripe_api import Snapshot, StripeApi

log = logs.get_logger(__name__)

CHECKPOINT = "backfill"
CHECKPOINT_KEY = "created_gte"
OVERLAP = timedelta(minutes=10)


@dataclass
class BackfillReport:
    """A pass: its totals, and each account's part (`since`/`checkpoint` of the first one covered)."""

    since: int | None = None
    listed: int = 0
    recovered: int = 0
    refused: int = 0
    checkpoint: int | None = None
    accounts_failed: int = 0  # connected accounts Stripe refused us (revoked, unknown): see each one's `error`
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)


def _checkpoint_name(account: str | None) -> str:
    return CHECKPOINT if account is None else f"{CHECKPOINT}:{account}"


def checkpoint(pool: ConnectionPool[Any], account: str | None = None) -> int | None:
    with pool.connection() as conn:
        value = jobs.state(conn, _checkpoint_name(account))
    return None if value is None else int(value[CHECKPOINT_KEY])


def _ingest(
    pool: ConnectionPool[Any], queue: EventQueue, event: Snapshot, account: str | None, *, livemode: bool
) -> bool:
    """Store and queue one event Stripe's API gave; True if it was new. Its `created` is no later than the answer.

    An event listed on a connected account belongs to it, as a webhook of it
    would say in `account`.
    """
    data = event.data if account is None or event.data.get("account") else {**event.data, "account": account}
    text = payload_text(data)
    _, header = read_event(text, now=event.seen_at.timestamp())
    return store_and_queue(pool, header, text, send=queue.send, livemode=livemode).new


def _ingest_missing(
    pool: ConnectionPool[Any],
    queue: EventQueue,
    page: list[Snapshot],
    part: dict[str, Any],
    account: str | None,
    *,
    livemode: bool,
) -> None:
    with pool.connection() as conn:
        stored = events.stored_ids(conn, [e.data["id"] for e in page])
    for event in page:
        if event.data["id"] in stored:
            continue
        try:
            part["recovered"] += int(_ingest(pool, queue, event, account, livemode=livemode))
        except InvalidPayload as exc:
            # Stripe's own event, but nothing we could store: say so and go on with the others.
            part["refused"] += 1
            log.warning("backfill_event_refused", reason=str(exc), account=account)


def _backfill_account(
    pool: ConnectionPool[Any], api: StripeApi, queue: EventQueue, account: str | None, since: datetime | None
) -> dict[str, Any]:
    part: dict[str, Any] = {"listed": 0, "recovered": 0, "refused": 0, "checkpoint": None}
    part["since"] = int(since.timestamp()) if since else checkpoint(pool, account)
    newest: int | None = None
    for page in api.event_pages(created_gte=part["since"], account=account):
        part["listed"] += len(page)
        newest = max(newest or 0, *(int(event.data["created"]) for event in page))
        _ingest_missing(pool, queue, page, part, account, livemode=api.livemode)
    if newest is not None:
        part["checkpoint"] = newest - int(OVERLAP.total_seconds())
        with pool.connection() as conn:
            jobs.advance_checkpoint(conn, _checkpoint_name(account), CHECKPOINT_KEY, part["checkpoint"])
    return part


def backfill(
    pool: ConnectionPool[Any],
    api: StripeApi,
    queue: EventQueue,
    *,
    since: datetime | None = None,
    account: str | None = accounts.ALL_ACCOUNTS,
) -> BackfillReport:
    """Ingest every event Stripe lists since `since` (default: each account's checkpoint) that we lack."""
    report = BackfillReport()
    for each in accounts.in_scope(pool, account):
        try:
            part = _backfill_account(pool, api, queue, each, since)
        except stripe.PermissionError as exc:
            if each is None:
                raise  # the platform refusing us is the key itself
            # A revoked connected account keeps its checkpoint; the others are backfilled.
            log.warning("backfill_account_refused", account=each, code=exc.code)
            report.accounts_failed += 1
            report.accounts[accounts.key(each)] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        if not report.accounts:
            report.since, report.checkpoint = part["since"], part["checkpoint"]
        report.accounts[accounts.key(each)] = part
        for name in ("listed", "recovered", "refused"):
            setattr(report, name, getattr(report, name) + part[name])
    log.info(
        "backfill_finished",
        listed=report.listed,
        recovered=report.recovered,
        refused=report.refused,
        accounts_failed=report.accounts_failed,
    )
    return report


def fetch(
    pool: ConnectionPool[Any], api: StripeApi, queue: EventQueue, event_id: str, *, account: str | None = None
) -> bool:
    """Retrieve one event from Stripe (of a connected `account`) and ingest it; True if it was new to us."""
    return _ingest(pool, queue, api.retrieve_event(event_id, account=account), account, livemode=api.livemode)
