"""Prometheus metrics, one definition each, shared by every process.

With several web workers set PROMETHEUS_MULTIPROC_DIR (webhooks/serve.py
does) so /metrics adds up every process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from subsync.store import jobs

DELIVERIES = Counter(
    "subsync_webhook_deliveries_total",
    "Webhook deliveries received, by outcome (accepted, duplicate, or the rejection code).",
    ["outcome"],
)
ACK_SECONDS = Histogram(
    "subsync_webhook_ack_seconds",
    "Time from request start to the answer of a delivery.",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
# Every outcome the receiver answers with, present at 0 from the start so that
# rate() and alerts see a series before the first rejection.
DELIVERY_OUTCOMES = (
    "accepted",
    "duplicate",
    "other_mode",
    "missing_signature",
    "invalid_signature",
    "timestamp_outside_tolerance",
    "invalid_payload",
    "payload_too_large",
    "storage_unavailable",
)
for _outcome in DELIVERY_OUTCOMES:
    DELIVERIES.labels(outcome=_outcome)
EVENTS_APPLIED = Counter(
    "subsync_events_applied_total",
    "Events the worker finished, by type and outcome (processed, ignored).",
    ["type", "outcome"],
)
EVENTS_FAILED = Counter(
    "subsync_events_failed_total",
    "Attempts that raised, by event type.",
    ["type"],
)


# --- Read at scrape time (webhooks/health.py builds the collector) ---
# Gauges of shared state (the queue in Redis, the event table, the last
# reconciliation) are read when /metrics is scraped, not kept by a process:
# every web process reports the same truth, multi-process mode or not.

QUEUE_DEPTH = "subsync_queue_depth"
QUEUE_DELAYED = "subsync_queue_delayed_messages"
EVENTS_BY_STATUS = "subsync_stored_events"
OLDEST_UNFINISHED_AGE = "subsync_oldest_unprocessed_event_age_seconds"
RECONCILE_LAST_RUN_START = "subsync_reconciliation_last_run_start_timestamp_seconds"
RECONCILE_LAST_RUN_STATUS = "subsync_reconciliation_last_run_status"
RECONCILE_LAST_RUN_FIGURE = "subsync_reconciliation_last_run"
RECONCILE_LAST_SUCCESS = "subsync_reconciliation_last_success_timestamp_seconds"
SCRAPE_UP = "subsync_scrape_source_up"
RECONCILE_FIGURES = jobs.RUN_FIGURES
RECONCILE_STATUSES = ("running", "succeeded", "failed")


@dataclass(frozen=True)
class QueueState:
    ready: int  # messages waiting in the Dramatiq queue
    delayed: int  # retries waiting for their backoff (the .DQ queue)


@dataclass(frozen=True)
class EventState:
    received: int
    processing: int
    failed: int
    oldest_unfinished_age_s: float  # 0 when nothing waits


class StateCollector(Collector):
    """Reads queue, backlog and reconciliation state on each scrape.

    The readers are passed in so this module needs neither PostgreSQL nor
    Redis; one that raises is reported as `subsync_scrape_source_up 0` and
    its gauges are left out, so /metrics still answers when a component is down.
    """

    def __init__(
        self,
        read_queue: Callable[[], QueueState],
        read_database: Callable[[], tuple[EventState, Mapping[str, Any] | None]],
    ) -> None:
        self.read_queue = read_queue
        self.read_database = read_database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(SCRAPE_UP, "Whether /metrics could read this source just now.", labels=["source"])
        queue = _try(self.read_queue)
        up.add_metric(["redis"], queue is not None)
        if queue is not None:
            yield GaugeMetricFamily(
                QUEUE_DEPTH,
                "Messages waiting in the Dramatiq queue on Redis, delayed retries included.",
                value=queue.ready + queue.delayed,
            )
            yield GaugeMetricFamily(
                QUEUE_DELAYED, "Of those, retries waiting for their backoff (the delay queue).", value=queue.delayed
            )
        database = _try(self.read_database)
        up.add_metric(["postgresql"], database is not None)
        if database is not None:
            state, run = database
            by_status = GaugeMetricFamily(
                EVENTS_BY_STATUS,
                "Stored events in the statuses on-call watches (received, processing, failed).",
                labels=["status"],
            )
            for status in ("received", "processing", "failed"):
                by_status.add_metric([status], getattr(state, status))
            yield by_status
            yield GaugeMetricFamily(
                OLDEST_UNFINISHED_AGE,
                "Age of the oldest event received but not yet applied (0 when none).",
                value=state.oldest_unfinished_age_s,
            )
            if run:
                yield from _reconciliation_metrics(run)
        yield up


def _try(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # noqa: BLE001 - a scrape must answer whatever is down
        return None


def _timestamp(value: Any) -> float | None:
    return None if value is None else value.timestamp()


def _reconciliation_metrics(run: Mapping[str, Any]) -> Iterator[Metric]:
    started = _timestamp(run.get("started_at"))
    if started is not None:
        yield GaugeMetricFamily(RECONCILE_LAST_RUN_START, "When the newest reconciliation run started.", value=started)
    status = GaugeMetricFamily(
        RECONCILE_LAST_RUN_STATUS, "The newest reconciliation run's status (1 for the current one).", labels=["status"]
    )
    for name in RECONCILE_STATUSES:
        status.add_metric([name], run.get("status") == name)
    yield status
    figures = GaugeMetricFamily(
        RECONCILE_LAST_RUN_FIGURE,
        "Figures of the newest reconciliation run (subscriptions, invoices, entitlements scanned, drifted, fixed;"
        " ledger added).",
        labels=["figure", "dry_run"],
    )
    dry = "true" if run.get("dry_run") else "false"
    for name in RECONCILE_FIGURES:
        figures.add_metric([name, dry], run.get(name) or 0)
    yield figures
    success = _timestamp(run.get("last_success_at"))
    if success is not None:
        yield GaugeMetricFamily(
            RECONCILE_LAST_SUCCESS,
            "When the newest reconciliation that changed things (not a dry run) succeeded.",
            value=success,
        )
