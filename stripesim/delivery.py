"""Signed webhook delivery, as Stripe does it, with optional chaos.

A background thread posts each event to every configured endpoint with a
``Stripe-Signature: t=<wall-clock unix time>,v1=<hmac-sha256 hex>`` header
(one ``v1`` per secret, as during a secret rotation). A non-2xx answer or a
connection error is retried later with exponential backoff.

Chaos (all off by default; decisions come from one seeded ``random.Random``):

* ``duplicate_rate``: the same event (same id) is delivered a second time;
* ``drop_rate``: the event is never delivered (it is still in ``GET /v1/events``);
* ``reorder_window``: deliveries are shuffled in batches of N events;
* ``delay``: seconds each delivery waits before its first attempt;
* ``drop_types``: patterns (``*`` wildcards) of event types never delivered
  (still in ``GET /v1/events``); a thin event matches by its own type or, for
  a v1 resource, by the snapshot type it stands for (``invoice.*`` drops
  ``v1.invoice.paid`` too).

Endpoints take snapshot payloads (the v1 ``Event``) or thin ones (a
``v2.core.event``); an event of either kind goes to the endpoints of its
kind, a snapshot's thin twin (``thin_of``) to the thin ones, each with chaos
decided on its own.

``resend_rate`` (a second event with a new id and the same data) is applied by
the simulator, which owns the events; it asks :meth:`WebhookDelivery.roll`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
import hmac
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import requests

from .ids import SeededRandom


@dataclass
class DeliverySettings:
    duplicate_rate: float = 0.0
    resend_rate: float = 0.0
    drop_rate: float = 0.0
    reorder_window: int = 0
    reorder_hold: float = 0.25  # seconds a partial reorder batch may wait
    delay: float = 0.0
    max_attempts: int = 5  # first attempt included
    retry_initial: float = 0.2
    retry_factor: float = 2.0
    retry_max: float = 30.0
    timeout: float = 10.0
    paused: bool = False
    body_format: str = "compact"  # or "pretty" (2-space indent)
    concurrency: int = 1  # deliveries in flight at once, as Stripe sends them in parallel
    drop_types: list[str] = field(default_factory=list)  # event type patterns never delivered


@dataclass
class Endpoint:
    url: str
    secrets: list[str] = field(default_factory=list)


@dataclass
class _Item:
    event: dict[str, Any]
    endpoint: Endpoint
    attempt: int = 0
    copy: str = "original"  # or "duplicate"


def sign(payload: str, secrets: list[str], timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value for ``payload``."""
    ts = int(time.time()) if timestamp is None else timestamp
    parts = [f"t={ts}"]
    for secret in secrets:
        mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256)
        parts.append(f"v1={mac.hexdigest()}")
    return ",".join(parts)


def encode_event(event: dict[str, Any], body_format: str = "compact") -> str:
    if body_format == "pretty":
        return json.dumps(event, indent=2)
    return json.dumps(event, separators=(",", ":"))


class WebhookDelivery:
    """Queues events and posts them from one background thread."""

    def __init__(
        self,
        endpoints: list[Endpoint] | None = None,
        settings: DeliverySettings | None = None,
        seed: int | None = None,
        log_size: int = 10000,
    ) -> None:
        self.settings = settings or DeliverySettings()
        self.endpoints: list[Endpoint] = list(endpoints or [])
        self.thin_endpoints: list[Endpoint] = []  # destinations of thin payloads
        # the thin twin of a snapshot event, for the thin endpoints; set by the simulator
        self.thin_of: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        self.rng = SeededRandom(seed)
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Item]] = []
        self._staging: list[_Item] = []
        self._staging_since = 0.0
        self._seq = itertools.count()
        self._inflight = 0
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._local = threading.local()  # one HTTP session per delivery thread
        self.counters: dict[str, int] = {
            "submitted": 0,
            "delivered": 0,
            "attempts": 0,
            "retried": 0,
            "dropped": 0,
            "failed": 0,
            "duplicated": 0,
            "resent": 0,
        }
        self.log: deque[dict[str, Any]] = deque(maxlen=log_size)

    # -- configuration -------------------------------------------------------
    def configure(self, **changes: Any) -> DeliverySettings:
        """Change chaos/retry settings; unknown names raise ``ValueError``."""
        known = {f.name for f in fields(DeliverySettings)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown delivery setting {key!r}")
        if isinstance(changes.get("drop_types"), str):
            changes["drop_types"] = [changes["drop_types"]]
        with self._cond:
            for key, value in changes.items():
                setattr(self.settings, key, value)
            self._cond.notify_all()
        return self.settings

    def reseed(self, seed: int | None) -> None:
        with self._cond:
            self.rng.seed(seed)

    def set_endpoints(self, endpoints: list[Endpoint]) -> None:
        with self._cond:
            self.endpoints = list(endpoints)

    def set_thin_endpoints(self, endpoints: list[Endpoint]) -> None:
        with self._cond:
            self.thin_endpoints = list(endpoints)

    def settings_dict(self) -> dict[str, Any]:
        return asdict(self.settings)

    def roll(self, rate: float) -> bool:
        """One seeded chaos decision: True with probability ``rate``."""
        if rate <= 0:
            return False
        with self._cond:
            return self.rng.random() < rate

    # -- queueing ------------------------------------------------------------
    def submit(self, event: dict[str, Any], *, resent: bool = False) -> None:
        """Queue ``event`` for every endpoint of its kind (and its thin twin for the thin ones), with chaos."""
        with self._cond:
            queued = False
            if event.get("object") == "v2.core.event":
                queued = self._submit_to(event, self.thin_endpoints, resent)
            else:
                queued = self._submit_to(event, self.endpoints, resent)
                if self.thin_endpoints and self.thin_of is not None:
                    thin = self.thin_of(event)
                    if thin is not None:
                        queued = self._submit_to(thin, self.thin_endpoints, resent) or queued
            if queued:
                self._ensure_thread()
                self._cond.notify_all()

    def _type_dropped(self, event: dict[str, Any]) -> bool:
        patterns = self.settings.drop_types
        if not patterns:
            return False
        names = [event["type"]]
        if event["type"].startswith("v1."):
            names.append(event["type"][3:])
        return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)

    def _submit_to(self, event: dict[str, Any], endpoints: list[Endpoint], resent: bool) -> bool:
        """Apply drop/duplicate/reorder to one event for ``endpoints``; True when something was queued."""
        if not endpoints:
            return False
        self.counters["submitted"] += 1
        if resent:
            self.counters["resent"] += 1
        s = self.settings
        thin = event.get("object") == "v2.core.event"
        by_type = self._type_dropped(event)
        if by_type or (s.drop_rate > 0 and self.rng.random() < s.drop_rate):
            self.counters["dropped"] += 1
            record: dict[str, Any] = {"event": event["id"], "type": event["type"], "result": "dropped"}
            if by_type:
                record["reason"] = "drop_types"
            if thin:
                record["payload"] = "thin"
            self.log.append(record)
            return False
        copies = ["original"]
        if s.duplicate_rate > 0 and self.rng.random() < s.duplicate_rate:
            copies.append("duplicate")
            self.counters["duplicated"] += 1
        for copy in copies:
            for ep in endpoints:
                item = _Item(event=event, endpoint=ep, copy=copy)
                if s.reorder_window and s.reorder_window > 1:
                    if not self._staging:
                        self._staging_since = time.monotonic()
                    self._staging.append(item)
                else:
                    self._push(item, time.monotonic() + s.delay)
        if s.reorder_window > 1 and len(self._staging) >= s.reorder_window:
            self._release_staging()
        return True

    def _push(self, item: _Item, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def _release_staging(self) -> None:
        batch = self._staging
        self._staging = []
        self.rng.shuffle(batch)
        due = time.monotonic() + self.settings.delay
        for item in batch:
            self._push(item, due)

    def _ensure_thread(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        if not self._threads:
            self._stop = False
        while len(self._threads) < max(1, int(self.settings.concurrency)):
            thread = threading.Thread(target=self._run, name=f"stripesim-delivery-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    # -- worker ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                item = None
                while item is None:
                    if self._stop:
                        return
                    now = time.monotonic()
                    if self._staging and now - self._staging_since >= self.settings.reorder_hold:
                        self._release_staging()
                    wait = 0.5
                    if self._staging:
                        wait = min(wait, max(0.0, self._staging_since + self.settings.reorder_hold - now))
                    if self._heap and not self.settings.paused:
                        due = self._heap[0][0]
                        if due <= now:
                            item = heapq.heappop(self._heap)[2]
                            self._inflight += 1
                            break
                        wait = min(wait, due - now)
                    self._cond.wait(timeout=max(wait, 0.001))
            try:
                self._send(item)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _send(self, item: _Item) -> None:
        s = self.settings
        body = encode_event(item.event, s.body_format)
        item.attempt += 1
        status: int | None = None
        error: str | None = None
        try:
            resp = self._session().post(
                item.endpoint.url,
                data=body.encode(),
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                    "Stripe-Signature": sign(body, item.endpoint.secrets),
                },
                timeout=s.timeout,
            )
            status = resp.status_code
            resp.close()
        except requests.RequestException as exc:
            error = type(exc).__name__
        ok = status is not None and 200 <= status < 300
        record: dict[str, Any] = {
            "event": item.event["id"],
            "type": item.event["type"],
            "url": item.endpoint.url,
            "attempt": item.attempt,
            "copy": item.copy,
            "status": status,
            "error": error,
            "result": "delivered" if ok else "error",
            "at": time.time(),
        }
        if item.event.get("object") == "v2.core.event":
            record["payload"] = "thin"
        with self._cond:
            self.counters["attempts"] += 1
            self.log.append(record)
            if ok:
                self.counters["delivered"] += 1
            elif item.attempt < s.max_attempts:
                self.counters["retried"] += 1
                backoff = min(s.retry_initial * s.retry_factor ** (item.attempt - 1), s.retry_max)
                self._push(item, time.monotonic() + backoff)
            else:
                self.counters["failed"] += 1

    # -- control ---------------------------------------------------------------
    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + len(self._staging) + self._inflight

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued was delivered or gave up. False on timeout.

        A partial reorder batch is released at once. Paused delivery never flushes.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._staging:
                self._release_staging()
                self._cond.notify_all()
            while self._heap or self._staging or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.05))
            return True

    def stats(self) -> dict[str, Any]:
        with self._cond:
            out: dict[str, Any] = dict(self.counters)
            out["pending"] = len(self._heap) + len(self._staging) + self._inflight
            return out

    def deliveries(self, event_id: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(r) for r in self.log if event_id is None or r["event"] == event_id]

    def reset_counters(self) -> None:
        with self._cond:
            for key in self.counters:
                self.counters[key] = 0
            self.log.clear()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
