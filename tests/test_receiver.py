"""POST /webhooks/stripe: every row of the contract's HTTP table, against real PostgreSQL and Redis."""

from __future__ import annotations

import json
import time

import pytest
from helpers import OLD_SECRET, SECRET, make_event, post_event, queued_ids, sign
from prometheus_client.parser import text_string_to_metric_families

from subsync import logs
from webhooks import services


def stored(conn, event_id):
    return conn.execute("SELECT * FROM stripe_events WHERE id = %s", (event_id,)).fetchone()


def test_a_new_valid_event_is_stored_then_queued(client, conn, broker):
    event = make_event()
    response = post_event(client, event)
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "duplicate": False}
    row = stored(conn, event["id"])
    assert row["status"] == "received"
    assert row["type"] == event["type"]
    assert row["object_id"] == "sub_test"
    assert row["payload"] == event
    assert row["created_at"].timestamp() == event["created"]
    assert queued_ids(broker) == [event["id"]]


def test_a_duplicate_is_answered_as_such_and_not_queued_again(client, conn, broker):
    event = make_event()
    post_event(client, event)
    response = post_event(client, event)
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "duplicate": True}
    assert conn.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 1
    assert queued_ids(broker) == [event["id"]]


def test_a_duplicate_of_a_failed_event_is_queued_again_as_a_replay(client, conn, broker):
    event = make_event()
    post_event(client, event)
    conn.execute("UPDATE stripe_events SET status = 'failed', last_error = 'boom' WHERE id = %s", (event["id"],))
    response = post_event(client, event)
    assert response.get_json() == {"received": True, "duplicate": True}
    row = stored(conn, event["id"])
    assert (row["status"], row["replays"]) == ("received", 1)
    assert queued_ids(broker) == [event["id"], event["id"]]


def test_a_missing_signature_is_refused(client, conn):
    response = client.post("/webhooks/stripe", data=json.dumps(make_event()))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "missing_signature"
    assert response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda body: sign(body, "whsec_someone_else"), id="wrong secret"),
        pytest.param(lambda body: sign(body + " ", SECRET), id="body changed"),
        pytest.param(lambda body: "t=123,v0=abc", id="no v1 scheme"),
        pytest.param(lambda body: "garbage", id="unparseable header"),
    ],
)
def test_a_signature_matching_no_secret_is_refused(client, conn, header):
    body = json.dumps(make_event())
    response = client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header(body)})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert conn.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 0


@pytest.mark.parametrize("offset", [-301, 301], ids=["too old", "from the future"])
def test_a_timestamp_outside_tolerance_is_refused(client, conn, offset):
    body = json.dumps(make_event())
    header = sign(body, SECRET, timestamp=int(time.time()) + offset)
    response = client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "timestamp_outside_tolerance"


def test_a_timestamp_inside_tolerance_is_accepted(client, conn):
    body = json.dumps(make_event())
    header = sign(body, SECRET, timestamp=int(time.time()) - 290)
    assert client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header}).status_code == 200


def test_every_configured_secret_is_accepted_for_rotation(client, conn):
    assert post_event(client, make_event(), secret=SECRET).status_code == 200
    assert post_event(client, make_event(), secret=OLD_SECRET).status_code == 200


def test_any_of_several_v1_signatures_may_match(client, conn):
    body = json.dumps(make_event())
    good = sign(body, SECRET)
    timestamp, signature = good.split(",")
    header = f"{timestamp},v1={'0' * 64},{signature},v0=legacy"
    assert client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("not json", id="not json"),
        pytest.param("[1, 2]", id="not an object"),
        pytest.param(json.dumps({"type": "x", "created": 1, "data": {"object": {}}}), id="no id"),
        pytest.param(json.dumps({"id": "evt_1", "created": 1, "data": {"object": {}}}), id="no type"),
        pytest.param(json.dumps({"id": "evt_1", "type": "x", "created": 1, "data": {}}), id="no data.object"),
        pytest.param(json.dumps({"id": "evt_1", "type": "x", "data": {"object": {}}}), id="no created"),
    ],
)
def test_a_body_that_is_not_a_stripe_event_is_refused(client, conn, body):
    response = post_event(client, body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_payload"


def _event_of_size(size: int) -> str:
    event = make_event()
    event["data"]["object"]["padding"] = ""
    base = len(json.dumps(event))
    event["data"]["object"]["padding"] = "x" * (size - base)
    body = json.dumps(event)
    assert len(body) == size
    return body


def test_a_body_at_the_limit_is_accepted_and_one_byte_over_is_refused(client, app, conn):
    limit = services.of(app).settings.max_body_bytes
    assert post_event(client, _event_of_size(limit)).status_code == 200
    response = post_event(client, _event_of_size(limit + 1))
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert conn.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 1


def test_a_huge_body_is_refused_before_it_is_read(client, conn):
    class Endless:
        """A body that would take forever to read: only the declared length may be trusted."""

        def read(self, n=-1):  # pragma: no cover - must never be called
            raise AssertionError("the body was read")

    response = client.post(
        "/webhooks/stripe",
        headers={"Stripe-Signature": "t=1,v1=x"},
        environ_overrides={"wsgi.input": Endless(), "CONTENT_LENGTH": str(50 * 1024 * 1024)},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("declared", "code"),
    [
        (lambda body: str(len(body) + 10), "incomplete_body"),  # the sender stopped before its Content-Length
        (lambda body: "12, 12", "invalid_content_length"),
    ],
    ids=["shorter-than-declared", "not-a-number"],
)
def test_a_body_its_content_length_does_not_describe_is_refused_and_nothing_is_stored(client, conn, declared, code):
    body = json.dumps(make_event())
    response = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sign(body)},
        environ_overrides={"CONTENT_LENGTH": declared(body)},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code
    assert conn.execute("SELECT count(*) AS n FROM stripe_events").fetchone()["n"] == 0


def test_another_method_on_the_webhook_path_is_405_with_allow(client):
    response = client.get("/webhooks/stripe")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json()["error"]["code"] == "method_not_allowed"


def test_an_unexpected_failure_is_a_json_500_logged_without_the_payload(app, client, conn, monkeypatch, caplog):
    def broken(arrival):
        raise RuntimeError(f"cannot handle {arrival.payload_json}")

    monkeypatch.setattr(services.of(app).intake, "submit", broken)
    event = make_event("customer.updated", {"id": "cus_1", "object": "customer", "email": "someone@example.com"})
    with caplog.at_level("INFO"):
        response = post_event(client, event)
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    assert response.headers["Content-Type"] == "application/json"
    [record] = [r for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "delivery_failed"]
    written = json.loads(logs.formatter().format(record))  # the line the process writes
    assert written["exception"]["type"] == "RuntimeError"
    assert written["event_id"] == event["id"]
    assert "someone@example.com" not in json.dumps(written)


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["components"] == {"postgresql": "ok", "redis": "ok"}


def deliveries_by_outcome(client):
    text = client.get("/metrics").get_data(as_text=True)
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "subsync_webhook_deliveries"
        for sample in family.samples
        if sample.name == "subsync_webhook_deliveries_total"
    }


def test_metrics_count_deliveries_by_outcome(client, conn):
    before = deliveries_by_outcome(client)
    post_event(client, make_event())
    client.post("/webhooks/stripe", data="{}")
    after = deliveries_by_outcome(client)
    moved = {outcome: after[outcome] - before.get(outcome, 0) for outcome in after}
    assert {outcome: n for outcome, n in moved.items() if n} == {"accepted": 1, "missing_signature": 1}


def test_readyz_answers_503_naming_the_component_that_is_down(client, conn, redis_down):
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["ready"] is False
    assert body["components"]["postgresql"] == "ok"
    assert body["components"]["redis"].startswith("down")
