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

The receiver is a WSGI app of its own, in front of Flask's (`mount`): this
one path is every request that matters for load, and Flask's request cycle
(two URL adapters, the app and request contexts, a Request and a Response
object, the hooks and signals) costs more CPU than the rest of the
receiver's own Python. What Flask gives the other routes this path does
not need: it reads two headers and the body, and answers JSON.

Every refusal is final for Stripe (4xx): a body that can never be stored
is refused before the insert, and an insert PostgreSQL refuses for the
data's sake is a 400 too. Only a failure of storage itself (no connection,
a timeout, a server error) is 503, which Stripe retries.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Iterable
from hashlib import sha256
from http import HTTPStatus
from secrets import token_hex
from typing import TYPE_CHECKING

import psycopg
import psycopg_pool
import structlog

from subsync import logs, metrics
from subsync.envelope import InvalidPayload, read_event
from subsync.intake import arrival

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

    from webhooks.services import Services

log = logs.get_logger(__name__)

PATH = "/webhooks/stripe"
SIGNATURE_SCHEME = "v1"
# SQLSTATE classes of errors about the data itself (22 data exception, 54
# program limit exceeded): storing the same body again fails the same way.
DATA_ERROR_CLASSES = ("22", "54")
_ACCEPTED = b'{"received": true, "duplicate": false}'
_DUPLICATE = b'{"received": true, "duplicate": true}'


# Stripe's request ids (`req_...`): anything else in the header is not
# logged, so a forged header cannot put text of its choosing in our logs.
REQUEST_ID = re.compile(r"req_[A-Za-z0-9]{1,64}")
# A timestamp or a Content-Length: ASCII digits only (str.isdigit also takes
# superscripts, which int() refuses, and other scripts' digits), and few
# enough that int() never refuses the length.
DECIMAL = re.compile(r"[0-9]{1,18}")
_JSON = ("Content-Type", "application/json")

Answer = tuple[str, bytes]  # the status line and the JSON body
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def bind_request_id(given: str | None) -> None:
    """Start the request's log context: its Stripe request id, or one of ours, and nothing of the request before."""
    structlog.contextvars.clear_contextvars()
    request_id = given if given and REQUEST_ID.fullmatch(given) else token_hex(8)
    structlog.contextvars.bind_contextvars(request_id=request_id)


def error(status: int, code: str, message: str) -> Answer:
    """A refusal: counted, logged (the reason is ours, quoting nothing of the request) and answered as JSON."""
    metrics.DELIVERIES.labels(outcome=code).inc()
    log.info("delivery_rejected", code=code, reason=message)
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return _STATUS_LINES[status], body


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
    if len(timestamps) != 1 or not DECIMAL.fullmatch(timestamps[0]):
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


class BodyRefused(Exception):
    """The body cannot be read as a delivery: the answer's status, code and reason."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


def _too_large(limit: int) -> BodyRefused:
    return BodyRefused(413, "payload_too_large", f"the body is over MAX_BODY_BYTES ({limit} bytes)")


def read_body(environ: WSGIEnvironment, limit: int) -> bytes:
    """The request body, at most `limit` bytes; BodyRefused if it is longer, or ends before its Content-Length.

    A declared length over the limit is refused before anything is read. A
    chunked body has none: it is read one byte past the limit, to tell a
    body of exactly the limit from a longer one.
    """
    declared = environ.get("CONTENT_LENGTH")
    expected = None
    if declared:
        if not DECIMAL.fullmatch(declared):
            raise BodyRefused(400, "invalid_content_length", "the Content-Length is not a number")
        expected = int(declared)
        if expected > limit:
            raise _too_large(limit)
    wanted = limit + 1 if expected is None else expected
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size < wanted:
        chunk = stream.read(wanted - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if expected is None and size > limit:
        raise _too_large(limit)
    if expected is not None and size < expected:
        raise BodyRefused(400, "incomplete_body", "the body ended before its Content-Length")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Receiver:
    """The WSGI app of POST /webhooks/stripe; every other request goes on to `rest` (Flask's app)."""

    def __init__(self, web: Services, rest: WSGIApplication) -> None:
        self.web = web
        self.rest = rest

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.rest(environ, start_response)
        bind_request_id(environ.get("HTTP_REQUEST_ID"))
        headers = [_JSON]
        if environ.get("REQUEST_METHOD") != "POST":
            status, body = error(405, "method_not_allowed", "deliveries are POSTed")
            headers.append(("Allow", "POST"))
        else:
            try:
                status, body = self.receive(environ)
            except Exception:  # an answer Stripe retries, and a line that says where, never what it was given
                log.exception("delivery_failed")
                status, body = error(500, "internal_error", "the delivery could not be handled; retry later")
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def receive(self, environ: WSGIEnvironment) -> Answer:
        started = time.perf_counter()
        settings = self.web.settings
        sig_header = environ.get("HTTP_STRIPE_SIGNATURE")
        if not sig_header:
            return error(400, "missing_signature", "the Stripe-Signature header is missing")
        try:
            raw = read_body(environ, settings.max_body_bytes)
        except BodyRefused as refused:
            return error(refused.status, refused.code, refused.reason)
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
            ingested = self.web.intake.submit(arrival(header, payload, livemode=self.web.livemode))
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
        return _STATUS_LINES[200], _ACCEPTED if ingested.new else _DUPLICATE


def mount(app: Flask, web: Services) -> None:
    """Serve POST /webhooks/stripe in front of the Flask app `app` (the way Flask documents WSGI middleware)."""
    app.wsgi_app = Receiver(web, app.wsgi_app)  # type: ignore[method-assign] # Flask's documented seam
