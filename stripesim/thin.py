"""Thin events (``"object": "v2.core.event"``): their JSON, their ids, and one account's log of them.

A thin event names what changed and carries no snapshot: ``related_object``
(``id``, ``type``, ``url``) says what to fetch, ``context`` in which account
(``acct_...``, null for the platform). Each snapshot event of a v1 resource
has a thin twin of its own (its own ``evt_`` id, type ``v1.`` + the snapshot
type, ``snapshot_event`` = the snapshot's id). What ``GET /v2/core/events/{id}``
shows adds the fetched attributes: ``changes`` (before and after, from the
snapshot's ``previous_attributes``) and ``data`` (the health events' payload).
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .ids import SeededRandom
from .model import SimError

JSON = dict[str, Any]
THIN_OBJECT = "v2.core.event"
# what a thin delivery carries; the rest of the event is fetched
PUSHED_KEYS = ("id", "object", "type", "created", "livemode", "context", "reason", "related_object", "snapshot_event")
_ALPHABET = string.ascii_letters + string.digits
_TABLE = bytes(_ALPHABET[b % len(_ALPHABET)].encode()[0] for b in range(256))
# object tag -> its v1 path, for related_object.url
_PATHS = {
    "subscription": "/v1/subscriptions/",
    "invoice": "/v1/invoices/",
    "customer": "/v1/customers/",
    "checkout.session": "/v1/checkout/sessions/",
    "price": "/v1/prices/",
    "subscription_item": "/v1/subscription_items/",
}


@functools.lru_cache(maxsize=4096)  # events come in bursts sharing one simulated second
def iso(ts: int) -> str:
    """A v2 timestamp: ISO 8601 in UTC with milliseconds (``2026-11-20T03:04:05.000Z``)."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_time(value: Any, param: str) -> int:
    """A v2 ``created[...]`` bound: ISO 8601 (as the API takes it) or unix seconds."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SimError(f"Invalid timestamp: {text}", param=param) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


def related_object(obj: JSON) -> JSON | None:
    """``{id, type, url}`` of a v1 object that has a URL of its own, else None (an application, say)."""
    kind = obj.get("object")
    path = _PATHS.get(kind) if isinstance(kind, str) else None
    if path is None or not isinstance(obj.get("id"), str):
        return None
    return {"id": obj["id"], "type": kind, "url": path + obj["id"]}


class ThinIds:
    """v2 event ids (``evt_test_65...`` in test mode, ``evt_65...`` live) from a generator of their own.

    Their own generator leaves every other id a seed gives as it was before thin events existed.
    """

    def __init__(self, seed: int | None, livemode: bool) -> None:
        self._rng = SeededRandom(seed)
        self._prefix = "evt_65" if livemode else "evt_test_65"
        self._seen: set[str] = set()

    def new(self, prefix: str | None = None, length: int = 46) -> str:
        while True:
            body = self._rng.randbytes(length).translate(_TABLE).decode()
            ident = (self._prefix if prefix is None else prefix) + body
            if ident not in self._seen:
                self._seen.add(ident)
                return ident


def v1_thin(snapshot: JSON, ident: str, context: str | None) -> JSON:
    """The thin twin of a v1 snapshot event, as ``GET /v2/core/events/{id}`` shows it."""
    obj = snapshot["data"]["object"]
    request = snapshot.get("request") or {}
    previous = snapshot["data"].get("previous_attributes")
    changes = None
    if previous is not None:
        changes = {"before": dict(previous), "after": {k: obj.get(k) for k in previous}}
    return {
        "id": ident,
        "object": THIN_OBJECT,
        "changes": changes,
        "context": context,
        "created": iso(snapshot["created"]),
        "livemode": snapshot["livemode"],
        "reason": (
            {"type": "request", "request": {"id": request["id"], "idempotency_key": request.get("idempotency_key")}}
            if request.get("id")
            else None
        ),
        "related_object": related_object(obj),
        "snapshot_event": snapshot["id"],
        "type": "v1." + snapshot["type"],
    }


def pushed(event: JSON) -> JSON:
    """What a thin-payload destination receives: the event without its fetched attributes."""
    return {k: event.get(k) for k in PUSHED_KEYS}


@dataclass
class ThinLog:
    """One account's thin events in creation order (the clock never goes back, so also by ``created``)."""

    events: list[JSON] = field(default_factory=list)
    created: list[int] = field(default_factory=list)  # unix seconds, for bisection
    pos: dict[str, int] = field(default_factory=dict)

    def add(self, event: JSON, created: int) -> None:
        self.pos[event["id"]] = len(self.events)
        self.events.append(event)
        self.created.append(created)

    def get(self, ident: str, floor: int) -> JSON | None:
        i = self.pos.get(ident)
        if i is None or self.created[i] < floor:
            return None
        return self.events[i]

    def page(
        self,
        *,
        floor: int,
        bounds: dict[str, int],
        match: Callable[[JSON], bool],
        limit: int,
        older_than: str | None,
    ) -> tuple[list[JSON], bool]:
        """Newest first, within ``bounds`` (gt/gte/lt/lte, seconds) and ``floor``; older than the cursor."""
        lo = bisect.bisect_left(self.created, floor)
        hi = len(self.events)
        for op, v in bounds.items():
            if op == "gte":
                lo = max(lo, bisect.bisect_left(self.created, v))
            elif op == "gt":
                lo = max(lo, bisect.bisect_right(self.created, v))
            elif op == "lte":
                hi = min(hi, bisect.bisect_right(self.created, v))
            elif op == "lt":
                hi = min(hi, bisect.bisect_left(self.created, v))
            else:
                raise SimError(f"Invalid created filter: {op}", param="created")
        if older_than is not None:
            cursor = self.pos.get(older_than)
            if cursor is None:
                raise SimError(f"Invalid page: {older_than}", param="page")
            hi = min(hi, cursor)
        out: list[JSON] = []
        i = hi - 1
        while i >= lo and len(out) <= limit:
            if match(self.events[i]):
                out.append(self.events[i])
            i -= 1
        return out[:limit], len(out) > limit
