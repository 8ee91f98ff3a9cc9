"""Prometheus metrics, one definition each, shared by every process.

Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py
does) so /metrics adds up every process.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
