"""POST /webhooks/stripe: verify, store once, answer, queue. Never apply here.

The path is short on purpose: the receiver is bound by Python CPU, and
Stripe disables endpoints that answer slowly. The stripe library's
`construct_event` builds a StripeObject tree, many times the cost of the
rest of the path; we verify the signature ourselves (one parse of the
header, so the timestamp checked for tolerance is the one the HMAC covers)
and read the body through `subsync.envelope`. The answer waits for the
commit only, which concurrent deliveries share (webhooks.group_commit);
the Dramatiq send (a Redis round trip) is left to this process's sender
thread (subsync.queue.BackgroundSender), so a slow or dead Redis never
slows an ack.

Every refusal is final for Stripe (4xx): a body that can never be stored
is refused before the insert, and an insert PostgreSQL refuses for the
data's sake is a 400 too. Only a failure of storage itself (no connection,
a timeout, a server error) is 503, which Stripe retries.
"""

from __future__ import annotations

import hmac
import json
import time
from hashlib import sha256
from typing import Any

import psycopg
import psycopg_pool
import structlog
from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from subsync import logs, metrics
from subsync.envelope import InvalidPayload, read_event
from subsync.intake import arrival
from webhooks import services

log = logs.get_logger(__name__)
bp = Blueprint("receiver", __name__)

SIGNATURE_SCHEME = "v1"
# SQLSTATE classes of errors about the data itself (22 data exception, 54
# program limit exceeded): storing the same body again fails the same way.
DATA_ERROR_CLASSES = ("22", "54")
_ACCEPTED = b'{"received": true, "duplicate": false}'
_DUPLICATE = b'{"received": true, "duplicate": true}'


def error(status: int, code: str, message: str) -> tuple[Response, int]:
    metrics.DELIVERIES.labels(outcome=code).inc()
    log.info("delivery_rejected", code=code, reason=message)
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body, mimetype="application/json"), status


class SignatureRefused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """The header's one timestamp and its v1 signatures; SignatureRefused if it has not exactly one `t`."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == SIGNATURE_SCHEME:
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        raise SignatureRefused("invalid_signature", "Stripe-Signature must carry exactly one timestamp t=<seconds>")
    if not signatures:
        raise SignatureRefused("invalid_signature", "Stripe-Signature carries no v1 signature")
    return int(timestamps[0]), signatures


def check_signature(payload: bytes, header: str, secrets: tuple[str, ...], tolerance: int) -> None:
    """Return if a v1 signature matches a secret within tolerance; else raise SignatureRefused.

    Every configured secret is tried (rotation) against every v1 signature
    in the header (Stripe sends several while its own secrets roll). The
    tolerance is a difference either way: a timestamp from the future is
    refused too.
    """
    timestamp, signatures = parse_signature_header(header)
    signed = b"%d.%s" % (timestamp, payload)
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), signed, sha256).hexdigest()
        if any(hmac.compare_digest(expected, signature) for signature in signatures):
            if abs(time.time() - timestamp) > tolerance:
                raise SignatureRefused(
                    "timestamp_outside_tolerance", f"the signature's timestamp is more than {tolerance} s from now"
                )
            return
    raise SignatureRefused("invalid_signature", "no v1 signature in Stripe-Signature matches a webhook secret")


def read_body(limit: int) -> bytes:
    """The request body, at most `limit` bytes; RequestEntityTooLarge beyond.

    With a Content-Length, Werkzeug refuses an oversized body before reading
    it. A chunked body has none: it is read one byte past the limit, to tell
    a body of exactly the limit from a longer one, which Werkzeug would cut
    short instead.
    """
    if request.content_length is not None:
        return request.get_data(cache=False)
    stream = request.environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge
    return b"".join(chunks)


@bp.post("/webhooks/stripe")
def receive() -> Any:
    started = time.perf_counter()
    web = services.current()
    settings = web.settings
    sig_header = request.headers.get("Stripe-Signature")
    if not sig_header:
        return error(400, "missing_signature", "the Stripe-Signature header is missing")
    raw = read_body(settings.max_body_bytes)
    try:
        check_signature(raw, sig_header, settings.webhook_secrets, settings.webhook_tolerance_s)
    except SignatureRefused as refused:
        return error(400, refused.code, refused.reason)
    try:
        payload = raw.decode("utf-8")
        _, header = read_event(payload, tolerance_s=settings.webhook_tolerance_s)
    except UnicodeDecodeError:
        return error(400, "invalid_payload", "the body is not UTF-8")
    except InvalidPayload as exc:
        return error(400, "invalid_payload", f"the body is not a Stripe event we can store: {exc}")
    structlog.contextvars.bind_contextvars(event_id=header.id, event_type=header.type)
    try:
        ingested = web.intake.submit(arrival(header, payload, livemode=web.livemode))
    except psycopg.Error as exc:
        sqlstate = exc.sqlstate or ""
        if sqlstate[:2] in DATA_ERROR_CLASSES:
            return error(400, "invalid_payload", f"PostgreSQL cannot store this body (SQLSTATE {sqlstate})")
        log.warning("storage_unavailable", error_type=type(exc).__name__, sqlstate=sqlstate or None)
        return error(503, "storage_unavailable", "the event could not be stored; retry later")
    except psycopg_pool.PoolTimeout:
        log.warning("storage_unavailable", error_type="PoolTimeout")
        return error(503, "storage_unavailable", "the event could not be stored; retry later")
    outcome = "other_mode" if ingested.other_mode else "accepted" if ingested.new else "duplicate"
    metrics.DELIVERIES.labels(outcome=outcome).inc()
    metrics.ACK_SECONDS.observe(time.perf_counter() - started)
    log.info("delivery_stored", outcome=outcome, queued=ingested.queued)
    return Response(_ACCEPTED if ingested.new else _DUPLICATE, mimetype="application/json")
