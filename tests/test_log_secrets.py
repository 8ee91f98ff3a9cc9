"""No log line of any process carries a secret, a header value, payload text or personal data.

The web, worker and scheduler processes run as the Procfile starts them,
with a database password, a webhook secret and an API key that appear
nowhere else, while the simulator delivers a customer's lifecycle (with
their email and name) and this test sends forged, hostile and poisonous
deliveries. A second web process, whose PostgreSQL is reached through a
proxy the test cuts, answers a delivery during a storage outage (503) and
one it crashes on (500). Then every line every process wrote is searched
for each secret and each piece of personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import TEST_DATABASE_URL, make_event, subscription_obj
from processes import BIN, _spawn, start_web, start_worker, stop
from proxy import TcpProxy, free_port
from sim import DAY, running_simulator

pytestmark = pytest.mark.slow

DB_PASSWORD = "dbPassCanary7261"
WEBHOOK_SECRET = "whsec_secretCanary55xq"
API_KEY = "sk_test_apiKeyCanary9Kq2b"
EMAIL = "ada.canary@example.org"
NAME = "Ada Canaryperson"
PAYLOAD_TEXT = "payloadCanary-3141"
FORGED_SIGNATURE = "t=1700000000,v1=" + "ab12" * 16


def with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{DB_PASSWORD}@{host}"


@pytest.fixture
def postgres_cut() -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 5432)
    yield proxy
    proxy.stop()


@pytest.fixture
def processes(conn: Any, tmp_path: Path, postgres_cut: TcpProxy) -> Iterator[tuple[Any, str, str, Path]]:
    web_port, faulty_port = free_port(), free_port()
    url = f"http://127.0.0.1:{web_port}/webhooks/stripe"
    with running_simulator(
        start=int(time.time()) - 40 * DAY, api_key=API_KEY, webhook_urls=[url], webhook_secret=WEBHOOK_SECRET
    ) as (sim, base):
        env = {
            "DATABASE_URL": with_password(TEST_DATABASE_URL),
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": base,
            "LOG_FORMAT": "json",
            "WEB_CONCURRENCY": "1",
            # The nightly reconciliation, every minute: its lines are in the logs too.
            "RECONCILE_CRON": "* * * * *",
        }
        faulty_env = {
            **env,
            "DATABASE_URL": with_password(TEST_DATABASE_URL).replace(":5432/", f":{postgres_cut.port}/"),
            # libpq's client encoding: psycopg then cannot encode a euro sign
            # in the body, an exception the receiver does not expect (a 500).
            "PGCLIENTENCODING": "LATIN1",
        }
        started = [start_web(web_port, env, log=tmp_path / "web.log")]
        try:
            started.append(start_web(faulty_port, faulty_env, log=tmp_path / "web-faulty.log"))
            started.append(start_worker(processes=1, threads=4, env=env, log=tmp_path / "worker.log"))
            started.append(_spawn([str(BIN / "python"), "-m", "reconciler.scheduler"], env, tmp_path / "scheduler.log"))
            yield sim, url, f"http://127.0.0.1:{faulty_port}/webhooks/stripe", tmp_path
        finally:
            for proc in reversed(started):
                stop(proc)


SENT_SIGNATURES: list[str] = []


def sign_bytes(body: bytes) -> str:
    """Stripe's signature of raw bytes (helpers.sign takes text); remembered, to be looked for in the logs."""
    timestamp = int(time.time())
    digest = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    SENT_SIGNATURES.append(digest)
    return f"t={timestamp},v1={digest}"


def post(url: str, body: str | bytes, signature: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return requests.post(url, data=body, headers=headers, timeout=10)


def wait_for(predicate: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s: {what}")
        time.sleep(0.25)


def test_no_process_logs_a_secret_a_header_payload_text_or_personal_data(processes, conn, postgres_cut):
    sim, url, faulty_url, logs = processes
    # A lifecycle with personal data, delivered by the simulator: payment, failures, dunning's end.
    customer = sim.create_customer(email=EMAIL, name=NAME, metadata={"note": PAYLOAD_TEXT})["id"]
    sim.create_subscription(customer, metadata={"note": PAYLOAD_TEXT})
    sim.fail_next_payments(customer, until_new_card=True)
    sim.advance(31 * DAY + 8 * DAY)
    assert sim.flush(60)

    # Forged, hostile and poisonous deliveries.
    poison = make_event(obj={"id": "sub_poison", "object": "subscription", "customer": EMAIL, "note": PAYLOAD_TEXT})
    poison_body = json.dumps(poison)
    bad = [
        (poison_body, FORGED_SIGNATURE, 400),
        (poison_body, None, 400),
        (f'{{"id": "evt_x", "note": "{PAYLOAD_TEXT}\\u0000"}}', "sign", 400),
        (f'{{"id": "{EMAIL}", "type": "x", "data": {{"object": {{}}}}, "created": NaN}}', "sign", 400),
        (b"\xff\xfe" + PAYLOAD_TEXT.encode(), "sign", 400),
        (poison_body, "sign", 200),  # stored, then fails in the worker: no items, no period
    ]
    for body, signature, status in bad:
        header = sign_bytes(body if isinstance(body, bytes) else body.encode()) if signature == "sign" else signature
        assert post(url, body, header).status_code == status
    fine = make_event(obj=subscription_obj("sub_fine", metadata={"note": PAYLOAD_TEXT}))
    assert post(url, json.dumps(fine), sign_bytes(json.dumps(fine).encode())).status_code == 200

    # A crash of the receiver, then a storage outage, each with personal data and payload text in the body.
    crash = make_event(obj=subscription_obj("sub_crash", customer=EMAIL, metadata={"note": PAYLOAD_TEXT + " \u20ac"}))
    crash_body = json.dumps(crash, ensure_ascii=False).encode()
    assert post(faulty_url, crash_body, sign_bytes(crash_body)).status_code == 500
    postgres_cut.stop()
    outage = make_event(obj=subscription_obj("sub_outage", customer=EMAIL, metadata={"note": PAYLOAD_TEXT}))
    assert post(faulty_url, json.dumps(outage), sign_bytes(json.dumps(outage).encode())).status_code == 503

    def status_of(event_id: str) -> str | None:
        row = conn.execute("SELECT status FROM stripe_events WHERE id = %s", (event_id,)).fetchone()
        return None if row is None else row["status"]

    wait_for(lambda: status_of(poison["id"]) == "failed", "the poison event failed in the worker")
    wait_for(
        lambda: (
            conn.execute("SELECT count(*) AS n FROM reconciliation_runs WHERE finished_at IS NOT NULL").fetchone()["n"]
            > 0
        ),
        "a reconciliation run by the scheduler",
    )
    names = ("web.log", "web-faulty.log", "worker.log", "scheduler.log")
    for proc_log in names:
        assert (logs / proc_log).stat().st_size > 0, proc_log

    text = "\n".join((logs / name).read_text(errors="replace") for name in names)
    # The logs are there, and say what happened.
    lines = ("delivery_stored", "invalid_signature", "event_failed", "event_applied", "reconcile_finished")
    for line in (*lines, "delivery_failed", "internal_error", "storage_unavailable"):
        assert line in text, line
    secrets = {
        "the database password": DB_PASSWORD,
        "the webhook secret": WEBHOOK_SECRET.removeprefix("whsec_"),
        "the API key": API_KEY.removeprefix("sk_test_"),
        "a forged signature": FORGED_SIGNATURE.split("v1=")[1],
        "a signature header": "v1=",
        **{f"signature {n}": digest for n, digest in enumerate(SENT_SIGNATURES)},
        "an email": EMAIL,
        "a name": NAME,
        "payload text": PAYLOAD_TEXT,
        "a character of the body": "\u20ac",
        "a character of the body, escaped": "\\u20ac",
    }
    leaked = {what: value for what, value in secrets.items() if value in text}
    assert leaked == {}, f"found in the logs: {sorted(leaked)}"
    print(f"{len(text.splitlines())} log lines searched", file=sys.stderr)
