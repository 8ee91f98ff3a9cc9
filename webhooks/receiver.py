"""POST /webhooks/stripe: verify, store once, answer, queue. Never apply here.

The path is short on purpose: the receiver is bound by Python CPU, and
Stripe disables endpoints that answer slowly. The stripe library's
`construct_event` builds a StripeObject tree (~0.8 ms for 4 KB); we only
verify the signature and `json.loads`. The answer waits for the commit only:
the Dramatiq send (a Redis round trip) is left to this process's sender
thread (worker.queue.BackgroundSender), so a slow or dead Redis never slows
an ack.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import psycopg_pool
import stripe
import structlog
from flask import Blueprint, Response, current_app, request

from subsync import db, events, logs, metrics
from worker.ingest import store_and_queue
from worker.queue import sender

log = logs.get_logger(__name__)
bp = Blueprint("receiver", __name__)


def error(status: int, code: str, message: str) -> tuple[Response, int]:
    metrics.DELIVERIES.labels(outcome=code).inc()
    log.info("delivery_rejected", code=code, reason=message)
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body, mimetype="application/json"), status


def _signature_timestamp(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def check_signature(payload: str, header: str, secrets: tuple[str, ...], tolerance: int) -> tuple[str, str] | None:
    """None if a v1 signature matches a secret within tolerance, else (code, reason).

    Every configured secret is tried (rotation) against every v1 signature
    in the header (Stripe sends several while its own secrets roll). The
    library checks only old timestamps; the contract's tolerance is a
    difference either way, so a timestamp from the future is refused too.
    """
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            continue
        timestamp = _signature_timestamp(header)
        if timestamp is None or abs(time.time() - timestamp) > tolerance:
            return "timestamp_outside_tolerance", f"the signature's timestamp is more than {tolerance} s from now"
        return None
    return "invalid_signature", "no v1 signature in Stripe-Signature matches a configured webhook secret"


@bp.post("/webhooks/stripe")
def receive() -> Any:
    started = time.perf_counter()
    settings = current_app.config["SETTINGS"]
    sig_header = request.headers.get("Stripe-Signature")
    if not sig_header:
        return error(400, "missing_signature", "the Stripe-Signature header is missing")
    # get_data raises 413 before reading when Content-Length is over the
    # limit, and stops reading a chunked body at the limit.
    raw = request.get_data(cache=False)
    try:
        payload = raw.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "invalid_payload", "the body is not UTF-8")
    refused = check_signature(payload, sig_header, settings.webhook_secrets, settings.webhook_tolerance_s)
    if refused is not None:
        return error(400, *refused)
    try:
        header = events.parse_event(json.loads(payload))
    except (ValueError, events.InvalidPayload) as exc:
        return error(400, "invalid_payload", f"the body is not a Stripe event: {exc}")
    structlog.contextvars.bind_contextvars(event_id=header.id, event_type=header.type)
    try:
        ingested = store_and_queue(db.pool(), header, payload, send=sender.submit)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        log.warning("storage_unavailable", error=str(exc), error_type=type(exc).__name__)
        return error(503, "storage_unavailable", "the event could not be stored; retry later")
    is_new = ingested.new
    outcome = "accepted" if is_new else "duplicate"
    metrics.DELIVERIES.labels(outcome=outcome).inc()
    metrics.ACK_SECONDS.observe(time.perf_counter() - started)
    log.info("delivery_stored", outcome=outcome, queued=ingested.queued)
    body = b'{"received": true, "duplicate": false}' if is_new else b'{"received": true, "duplicate": true}'
    return Response(body, mimetype="application/json")
