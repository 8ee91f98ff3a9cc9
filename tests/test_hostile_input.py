"""What a careless sender or an attacker can post: every bad body answered at once, nothing stored, nothing kept.

Each case here was answered wrongly once (a 503 Stripe retries for days, an
HTML 500, a stale capture accepted, a body cut and misjudged).
"""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
import stripe
from helpers import SECRET, apply, event_row, make_event, post_event, sign

from subsync import config
from subsync.envelope import MAX_NUMBER_CHARS, loads, numeric_chars


def stored(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"]


def post_raw(client, body: str, header: str | None = None):
    return client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header or sign(body)})


def test_a_second_timestamp_cannot_carry_an_old_capture_past_the_tolerance(client, conn):
    old = int(time.time()) - 3600
    body = json.dumps(make_event())
    captured = stripe.WebhookSignature._compute_signature(f"{old}.{body}", SECRET)
    now = int(time.time())
    forged = (f"v1={captured}, t={now},t={old}", f"t={now},v1={captured},t={old}", f"t={old},t={now},v1={captured}")
    for header in forged:
        response = post_raw(client, body, header)
        assert response.status_code == 400, header
        assert response.get_json()["error"]["code"] == "invalid_signature"
    assert stored(conn) == 0


def test_an_old_capture_with_its_own_timestamp_is_outside_tolerance(client, conn):
    body = json.dumps(make_event())
    response = post_raw(client, body, sign(body, timestamp=int(time.time()) - 3600))
    assert response.get_json()["error"]["code"] == "timestamp_outside_tolerance"


NOT_A_TIMESTAMP = {
    "a superscript two": "\u00b2",
    "Arabic-Indic digits": "\u0661\u0662\u0663",
    "a digit and a superscript": "1\u00b2",
    "a fullwidth one": "\uff11",
    "5000 digits": "9" * 5000,
    "empty": "",
    "negative": "-1",
    "a space inside": "1 2",
}


@pytest.mark.parametrize("timestamp", list(NOT_A_TIMESTAMP.values()), ids=list(NOT_A_TIMESTAMP))
def test_a_timestamp_that_is_not_ascii_digits_is_an_invalid_signature(client, conn, timestamp):
    body = json.dumps(make_event())
    response = post_raw(client, body, f"t={timestamp},v1=ab")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert stored(conn) == 0


@pytest.mark.parametrize(
    "declared", ["\u00b2", "\u0661\u0662", "9" * 5000], ids=["a superscript two", "Arabic-Indic digits", "5000 digits"]
)
def test_a_content_length_that_is_not_ascii_digits_is_refused(client, conn, declared):
    body = json.dumps(make_event())
    response = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sign(body)},
        environ_overrides={"CONTENT_LENGTH": declared},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_content_length"
    assert stored(conn) == 0


def event_text(**changes) -> str:
    """A Stripe event's JSON with one field replaced by raw JSON text (`changes`: path -> text)."""
    event = make_event()
    placeholders = {}
    for path, text in changes.items():
        target = event
        *parents, leaf = path.split(".")
        for name in parents:
            target = target[name]
        marker = f"@@{uuid.uuid4().hex}@@"
        target[leaf] = marker
        placeholders[json.dumps(marker)] = text
    body = json.dumps(event)
    for marker, text in placeholders.items():
        body = body.replace(marker, text)
    return body


UNSTORABLE = {
    "a NUL escape": {"data.object.metadata": '{"note": "a\\u0000b"}'},
    "a NUL in a key": {"data.object.metadata": '{"a\\u0000": "b"}'},
    "a lone surrogate": {"data.object.metadata": '{"note": "\\ud800"}'},
    "NaN": {"data.object.amount": "NaN"},
    "Infinity": {"data.object.amount": "-Infinity"},
    "a number past a double": {"data.object.amount": "1e5000"},
    "a number too long": {"data.object.amount": "1" + "0" * 5000},
    "a fraction of 72 characters written out": {"data.object.amount": "1e-70"},
    "a negative one": {"data.object.amount": "-2.5e-63"},
    "an exponent of 301 digits written out": {"data.object.amount": "1.5e300"},
    "a zero of 100 places": {"data.object.amount": "0e-100"},
    "a fraction PostgreSQL cannot hold": {"data.object.amount": "1e-20000"},
    "created as 1e20": {"created": "1e20"},
    "created far in the future": {"created": "100000000000000000000"},
    "created before Stripe": {"created": "-1000000000000000"},
    "created an hour ahead": {"created": str(int(time.time()) + 3600)},
    "an id of 10 KB": {"id": json.dumps("evt_" + "x" * 10_000)},
    "an object id of 10 KB": {"data.object.id": json.dumps("sub_" + "x" * 10_000)},
    "nesting 10,000 deep": {"data.object.metadata": "[" * 10_000 + "]" * 10_000},
    "nesting 300 deep": {"data.object.metadata": "[" * 300 + "]" * 300},
}


@pytest.mark.parametrize("changes", list(UNSTORABLE.values()), ids=list(UNSTORABLE))
def test_a_body_that_can_never_be_stored_is_400_and_nothing_is_stored(client, conn, changes):
    response = post_raw(client, event_text(**changes))
    assert response.status_code == 400
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == "invalid_payload"
    assert "\n" not in error["message"]
    assert stored(conn) == 0


def test_a_paired_surrogate_and_a_deep_but_sane_event_are_stored(client, conn):
    # An escaped backslash before u0000 is the text \u0000, not a NUL.
    metadata = '{"emoji": "\\ud83d\\ude00", "path": "C:\\\\u0000", "deep": ' + "[" * 50 + "]" * 50 + "}"
    body = event_text(**{"data.object.metadata": metadata})
    assert post_raw(client, body).status_code == 200
    assert stored(conn) == 1


# Written out by PostgreSQL: 64 characters or fewer, the longest that are stored and read back.
LONGEST_NUMBERS = ["1e-62", "-1.5e-60", "9.99e63", "0.5e-3", "100e-2", "-0.0e-61", "1E+2", "12.5"]


@pytest.mark.parametrize("literal", [*LONGEST_NUMBERS, "1e-70", "1.5e300", "-2.5e-63", "0e-100", "0.10"])
def test_numeric_chars_is_the_length_postgresql_writes_a_number_back_as(conn, literal):
    written = conn.execute("SELECT %s::jsonb::text AS t", (literal,)).fetchone()["t"]
    assert numeric_chars(literal) == len(written), written


def test_numbers_as_long_as_postgresql_writes_back_are_stored_and_read_back_by_the_worker(client, conn):
    amounts = ", ".join(f'"a{i}": {literal}' for i, literal in enumerate(LONGEST_NUMBERS))
    event = make_event("customer.created", {"id": "cus_numbers", "object": "customer", "email": "a@example.com"})
    body = json.dumps(event).replace('"email"', amounts + ', "email"')
    assert post_raw(client, body).status_code == 200
    text = conn.execute("SELECT payload::text AS t FROM stripe_events WHERE id = %s", (event["id"],)).fetchone()["t"]
    written_out = "0." + "0" * 61 + "1"
    assert len(written_out) == MAX_NUMBER_CHARS
    assert f'"a0": {written_out}' in text
    assert loads(text)["data"]["object"]["a0"] == 1e-62
    assert apply(event["id"]) == "processed"
    assert event_row(conn, event["id"])["last_error"] is None


def test_a_chunked_body_over_the_limit_is_413(app, conn):
    limit = config.load().max_body_bytes
    body = event_text(**{"data.object.metadata": json.dumps({"pad": "x" * limit})})
    client = app.test_client()
    # No Content-Length: as a chunked request reaches the app.
    response = client.post(
        "/webhooks/stripe",
        input_stream=io.BytesIO(body.encode()),
        headers={"Stripe-Signature": sign(body), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert stored(conn) == 0


def test_a_chunked_body_within_the_limit_is_read_whole(app, conn):
    body = json.dumps(make_event())
    response = app.test_client().post(
        "/webhooks/stripe",
        input_stream=io.BytesIO(body.encode()),
        headers={"Stripe-Signature": sign(body), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200
    assert stored(conn) == 1


def test_each_requests_log_lines_carry_its_own_request_id_and_nothing_of_the_one_before(client, conn, caplog):
    first = make_event()
    with caplog.at_level("INFO"):
        post_event(client, first, headers={"Request-Id": "req_first123"})
        client.post("/webhooks/stripe", data="{}", headers={"Request-Id": "req_second456"})
        client.post("/webhooks/stripe", data="{}", headers={"Request-Id": "forged; not an id of Stripe's"})
    lines = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("logger") == "webhooks.receiver"]
    stored_line, rejected, forged = lines[-3:]
    assert (stored_line["request_id"], stored_line["event_id"]) == ("req_first123", first["id"])
    assert rejected["request_id"] == "req_second456"
    assert "event_id" not in rejected
    assert forged["request_id"] not in ("req_second456", "forged; not an id of Stripe's")
    assert "event_id" not in forged
