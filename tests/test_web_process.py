"""The web process as the Procfile starts it (granian via webhooks.serve): stops, reloads, slow clients, limits.

Each test starts the real process (tests/processes.py runs the Procfile's
web line) with one worker, so that what one worker does is what the test
sees. The deadlines are generous bounds for a functional check; how long
slow clients stall a server is measured in bench/servers.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from helpers import make_event, queued_ids, sign
from processes import start_web, stop
from proxy import TcpProxy, free_port

pytestmark = pytest.mark.slow


class HeldProxy(TcpProxy):
    """A proxy that connects both ends but forwards nothing until `release` is set: a stalled Redis."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.release = threading.Event()
        super().__init__(target_host, target_port)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        self.release.wait(60)
        super()._pipe(src, dst)


def wait_until(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def deliver(port: int, event: dict[str, Any], timeout: float = 5) -> requests.Response:
    body = json.dumps(event)
    return requests.post(
        f"http://127.0.0.1:{port}/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
        timeout=timeout,
    )


@dataclass
class Web:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture
def web(conn: Any, broker: Any, tmp_path: Path) -> Iterator[Web]:
    """One web process of one worker with one thread, and a small body limit."""
    port, log = free_port(), tmp_path / "web.log"
    env = {"WEB_CONCURRENCY": "1", "WEB_THREADS": "1", "MAX_BODY_BYTES": "4096", "LOG_FORMAT": "json"}
    proc = start_web(port, env, log=log)
    try:
        yield Web(port, log, proc)
    finally:
        stop(proc)


def test_idle_and_dripping_connections_do_not_stop_a_delivery(web):
    port, log = web.port, web.log
    idle = socket.create_connection(("127.0.0.1", port))
    dripping = socket.create_connection(("127.0.0.1", port))
    try:
        # A request whose headers never end, one byte at a time.
        dripping.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        for _ in range(2):
            time.sleep(0.5)
            dripping.sendall(b"a")
        event = make_event()
        response = deliver(port, event, timeout=5)
        assert response.status_code == 200
        assert response.json() == {"received": True, "duplicate": False}
    finally:
        idle.close()
        dripping.close()
    # One line per delivery, the app's; every line (granian's own included) in the app's JSON format.
    wait_until(lambda: event["id"] in log.read_text(), "the delivery's log line")
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records if r.get("event_id") == event["id"]] == ["delivery_stored"]
    assert not [line for line in lines if "POST /webhooks/stripe" in line]
    assert any(r.get("logger", "").startswith("_granian") for r in records)


def test_a_body_over_the_limit_is_refused_with_413_whether_its_length_is_declared_or_chunked(web):
    port = web.port
    url = f"http://127.0.0.1:{port}/webhooks/stripe"
    body = json.dumps(make_event(obj={"id": "sub_big", "object": "subscription", "padding": "x" * 8000}))
    headers = {"Stripe-Signature": sign(body), "Content-Type": "application/json"}
    declared = requests.post(url, data=body, headers=headers, timeout=10)

    def chunks() -> Iterator[bytes]:
        data = body.encode()
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    chunked = requests.post(url, data=chunks(), headers=headers, timeout=10)
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
    small = make_event()
    assert deliver(port, small).status_code == 200


def test_a_graceful_stop_answers_the_request_in_flight_and_sends_what_was_handed_to_the_sender(
    conn, broker, database_url, tmp_path
):
    redis_port = int(os.environ.get("TEST_REDIS_PORT", "6379"))
    held = HeldProxy("127.0.0.1", redis_port)
    port = free_port()
    env = {"WEB_CONCURRENCY": "1", "REDIS_URL": f"redis://127.0.0.1:{held.port}/0"}
    proc = start_web(port, env, log=tmp_path / "web.log")
    event = make_event()
    answer: list[requests.Response] = []
    try:
        with psycopg.connect(database_url) as blocker:
            # The delivery's insert waits for this lock: the request is in flight when the stop comes.
            blocker.execute("LOCK TABLE stripe_events IN SHARE ROW EXCLUSIVE MODE")
            sender = threading.Thread(target=lambda: answer.append(deliver(port, event, timeout=30)))
            sender.start()
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO stripe_events%'"
                    ).fetchone()["n"]
                    == 1
                ),
                "the delivery to wait for the lock",
            )
            os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(0.5)  # the signal reaches the worker before the request can finish
            assert proc.poll() is None
        sender.join(30)
        assert answer
        assert answer[0].status_code == 200
        # Answered, and its message held by the stalled Redis: the process waits for it.
        assert proc.poll() is None
        held.release.set()
        assert proc.wait(timeout=30) == 0
    finally:
        held.release.set()
        stop(proc)
        held.stop()
    assert queued_ids(broker) == [event["id"]]


def test_sighup_replaces_the_workers_and_deliveries_go_on(web):
    before = children(web.proc.pid)
    assert len(before) == 1
    os.kill(web.proc.pid, signal.SIGHUP)
    wait_until(lambda: (now := children(web.proc.pid)) and not (now & before), "a new worker", timeout=60)
    assert web.proc.poll() is None
    assert deliver(web.port, make_event()).status_code == 200
