"""Signed Stripe webhook deliveries and a keep-alive HTTP load driver, for the benches.

Requests are built and signed before a phase starts (real Stripe events,
2 to 6 KB, unique ids, from the directory SUBSYNC_STRIPE_FIXTURES names, as
for the tests) and sent over raw keep-alive sockets that one thread waits on
together, so that during a phase the driver's own work is a send and a read
and it takes little CPU from the server it measures.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import selectors
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import stripe

from bench import common

# The tests' variable and default (tests/stripe_fixtures.py): one directory of real payloads for both.
FIXTURES_VARIABLE = "SUBSYNC_STRIPE_FIXTURES"
DEFAULT_FIXTURES = common.ROOT.parent / "shared" / "stripe-fixtures"
# Stripe's event bodies are indented JSON of this size for the subscription and invoice events.
MIN_BODY, MAX_BODY = 2048, 6144
ID_PLACEHOLDER = "evt_" + "X" * 24
STRIPE_HEADERS = (
    "Content-Type: application/json; charset=utf-8\r\n"
    "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
    "Accept: */*; q=0.5, application/xml\r\n"
    "Cache-Control: no-cache\r\n"
)

# --- events ---------------------------------------------------------------------------------


def fixtures_dir() -> Path:
    """The directory SUBSYNC_STRIPE_FIXTURES names, else ../shared/stripe-fixtures; the bench stops without one."""
    named = os.environ.get(FIXTURES_VARIABLE, "").strip()
    if named and not Path(named).is_dir():
        msg = f"{FIXTURES_VARIABLE}={named}: no such directory"
        raise SystemExit(msg)
    if not named and not DEFAULT_FIXTURES.is_dir():
        msg = f"the benches need real Stripe events: set {FIXTURES_VARIABLE} ({DEFAULT_FIXTURES} does not exist)"
        raise SystemExit(msg)
    return Path(named) if named else DEFAULT_FIXTURES


def event_templates(fixtures: Path | None = None) -> list[str]:
    """Real Stripe events within the size range, re-indented as Stripe sends them, id left to fill."""
    fixtures = fixtures or fixtures_dir()
    templates = []
    for path in sorted(fixtures.glob("*/*.json")):
        try:
            event = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        if not (isinstance(event, dict) and event.get("object") == "event" and isinstance(event.get("data"), dict)):
            continue
        event["id"] = ID_PLACEHOLDER
        event["created"] = int(time.time())
        body = json.dumps(event, indent=2)
        if MIN_BODY <= len(body.encode()) <= MAX_BODY:
            templates.append(body)
    if not templates:
        msg = f"no Stripe events of {MIN_BODY}-{MAX_BODY} bytes under {fixtures}"
        raise SystemExit(msg)
    return templates


@dataclass
class Batch:
    """Signed requests for one phase: thread i sends requests[i]."""

    requests: list[list[bytes]]
    ids: list[list[str]]


def build_batch(templates: Sequence[str], prefix: str, count: int, concurrency: int, port: int) -> Batch:
    stamp = str(int(time.time()))
    key = common.SECRET.encode()
    requests: list[list[bytes]] = [[] for _ in range(concurrency)]
    ids: list[list[str]] = [[] for _ in range(concurrency)]
    for n in range(count):
        event_id = f"evt_{prefix}{n:0{24 - len(prefix)}d}"
        body = templates[n % len(templates)].replace(ID_PLACEHOLDER, event_id).encode()
        signature = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        head = (
            f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{STRIPE_HEADERS}"
            f"Stripe-Signature: t={stamp},v1={signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests[n % concurrency].append(head.encode() + body)
        ids[n % concurrency].append(event_id)
    return Batch(requests, ids)


# --- this machine against the issue's -----------------------------------------------------

# What the issue measured on the machine its targets were set on, µs of CPU per 4 KB event.
ISSUE_REFERENCE_US = {"stripe.Webhook.construct_event": 800.0, "WebhookSignature.verify_header + json.loads": 40.0}


def reference_costs(templates: Sequence[str], rounds: int = 9, calls: int = 200) -> dict[str, float]:
    """This machine's CPU µs for what the issue measured, on the fixture event nearest 4 KB; median of rounds.

    Read beside the absolute targets: a slower or busier machine shows here.
    construct_event allocates a tree of objects and varies more from round to round.
    """
    body = min(templates, key=lambda t: abs(len(t.encode()) - 4096)).replace(ID_PLACEHOLDER, "evt_" + "r" * 24)
    stamp = int(time.time())
    header = f"t={stamp},v1={hmac.new(common.SECRET.encode(), f'{stamp}.{body}'.encode(), hashlib.sha256).hexdigest()}"
    operations = {
        "stripe.Webhook.construct_event": lambda: stripe.Webhook.construct_event(body, header, common.SECRET),
        "WebhookSignature.verify_header + json.loads": lambda: (
            stripe.WebhookSignature.verify_header(body, header, common.SECRET, 300),
            json.loads(body),
        ),
    }
    costs = {}
    for name, operation in operations.items():
        samples = []
        for _ in range(rounds):
            began = time.process_time()
            for _ in range(calls):
                operation()
            samples.append((time.process_time() - began) / calls * 1e6)
        costs[name] = statistics.median(samples)
    return costs


def print_reference(costs: dict[str, float]) -> None:
    common.print_table(
        "This machine against the one the targets were set on (CPU µs per 4 KB event, median of 9 rounds)",
        ["operation", "here", "the issue's", "here / issue's"],
        [
            [name, f"{us:.0f}", f"{ISSUE_REFERENCE_US[name]:.0f}", f"{us / ISSUE_REFERENCE_US[name]:.2f}"]
            for name, us in costs.items()
        ],
    )


# --- the load driver ------------------------------------------------------------------------


@dataclass
class Phase:
    acks: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    acked_ids: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds: server, postgres, redis
    driver_cpu: float = 0.0  # seconds of the driver's own CPU during the phase


def response_end(buffer: bytes) -> tuple[int, int, bool] | None:
    """(status, bytes used, server closes) of the first whole response in `buffer`; None until it is whole."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = buffer[:head_end].split(b"\r\n")
    status = int(lines[0].split()[1])
    length, closing = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            closing = True
    used = head_end + 4 + length
    return None if len(buffer) < used else (status, used, closing)


def post_once(port: int, raw: bytes, timeout: float) -> int:
    """One request on a connection of its own: the status code, or 0 if it failed or timed out."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(raw)
            buffer = b""
            while (whole := response_end(buffer)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    return 0
                buffer += chunk
            return whole[0]
    except OSError:
        return 0


class _Slot:
    """One connection of the driver and the requests it sends, one at a time."""

    def __init__(self, port: int, requests: list[bytes], ids: list[str]) -> None:
        self.port, self.requests, self.ids = port, requests, ids
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.next = 0
        self.began = 0.0

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def drive(port: int, batch: Batch, seconds: float) -> Phase:
    """Send slice i of the batch on connection i, one request at a time each, until `seconds` pass.

    One thread waits on every connection at once (epoll), so that the
    driver's CPU per request stays small and about the same whatever server
    it measures: the CPU it takes from the 2 cores is CPU the servers lack.
    """
    return _Driver(port, batch, seconds).run()


class _Driver:
    def __init__(self, port: int, batch: Batch, seconds: float) -> None:
        self.slots = [_Slot(port, requests, ids) for requests, ids in zip(batch.requests, batch.ids, strict=True)]
        self.seconds = seconds
        self.selector = selectors.DefaultSelector()
        self.phase = Phase()
        self.deadline = 0.0
        self.in_flight = 0

    def run(self) -> Phase:
        for slot in self.slots:  # connected before the clock starts, as Stripe's senders stay connected
            self.selector.register(slot.connect(), selectors.EVENT_READ, slot)
        began, cpu_began = time.perf_counter(), time.process_time()
        self.deadline = began + self.seconds
        for slot in self.slots:
            self._send(slot)
        while self.in_flight:
            for key, _ in self.selector.select(timeout=30):
                self._readable(key.data)
        self.phase.elapsed = time.perf_counter() - began
        self.phase.driver_cpu = time.process_time() - cpu_began
        for slot in self.slots:
            self._close(slot)
        self.selector.close()
        self.phase.acks = len(self.phase.acked_ids)
        return self.phase

    def _send(self, slot: _Slot) -> None:
        while slot.next < len(slot.requests) and time.perf_counter() < self.deadline:
            try:
                if slot.sock is None:
                    self.selector.register(slot.connect(), selectors.EVENT_READ, slot)
                assert slot.sock is not None
                slot.began = time.perf_counter()
                slot.sock.sendall(slot.requests[slot.next])
            except OSError:
                self._failed(slot)
                continue
            self.in_flight += 1
            return

    def _readable(self, slot: _Slot) -> None:
        assert slot.sock is not None
        try:
            chunk = slot.sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.in_flight -= 1
            self._failed(slot)
            self._send(slot)
            return
        slot.buffer += chunk
        whole = response_end(slot.buffer)
        if whole is None:
            return
        status, used, closing = whole
        self.in_flight -= 1
        self.phase.latencies.append(time.perf_counter() - slot.began)
        if status == 200:
            self.phase.acked_ids.append(slot.ids[slot.next])
        else:
            self.phase.errors += 1
        slot.next += 1
        slot.buffer = slot.buffer[used:]
        if closing:
            self._close(slot)
        self._send(slot)

    def _failed(self, slot: _Slot) -> None:
        self.phase.errors += 1
        slot.next += 1
        self._close(slot)

    def _close(self, slot: _Slot) -> None:
        if slot.sock is not None:
            self.selector.unregister(slot.sock)
            slot.close()
