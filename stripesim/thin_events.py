"""Thin events: every snapshot event gets a thin twin, thin-payload endpoints, and ``/v2/core/events`` reads.

Stripe's event destinations deliver either snapshot or thin payloads; here an
endpoint is one or the other (``webhook_urls`` snapshot, ``thin_webhook_urls``
thin; the same url may be in both). Each v1 event stored gets a thin twin at
once (a resent copy gets one of its own), so any lifecycle can be delivered
as thin events only, under the same chaos settings, each decided on its own.
Thin events are kept, like v1 events, per account and read for 30 days.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from .core import SimCore
from .listing import check_limit
from .model import DAY, SimError, missing
from .shapes import JSON
from .thin import ThinIds, ThinLog, iso, parse_time, pushed, v1_thin

THIN_RETENTION = 30 * DAY
V2_DEFAULT_LIMIT = 20


class ThinEventsMixin(SimCore):
    """The thin twin of each stored event, thin endpoints, and the v2 event reads."""

    def __init__(self, *, thin_webhook_urls: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        seed = kwargs.get("seed")
        self.thin_ids = ThinIds(None if seed is None else int(seed) + 2, self.livemode)
        self._thin_logs: dict[str | None, ThinLog] = {}  # by account id, None for the platform
        self._all_thin: list[JSON] = []  # every account's, in emission order
        self._thin_by_snapshot: dict[str, JSON] = {}
        self.delivery.thin_of = self._thin_twin
        self._set_thin_urls(list(thin_webhook_urls), self.webhook_secret)

    # ------------------------------------------------------------- the log
    def _store_event(self, event: JSON) -> None:
        super()._store_event(event)
        thin = v1_thin(event, self.thin_ids.new(), event.get("account"))
        self._thin_by_snapshot[event["id"]] = thin
        self._add_thin(thin, event["created"], event.get("account"))

    def _add_thin(self, thin: JSON, created: int, account: str | None) -> None:
        log = self._thin_logs.get(account)
        if log is None:
            log = self._thin_logs[account] = ThinLog()
        log.add(thin, created)
        self._all_thin.append(thin)

    def _thin_twin(self, event: JSON) -> JSON | None:
        thin = self._thin_by_snapshot.get(event["id"])
        return None if thin is None else pushed(thin)

    def _thin_log(self, account: str | None) -> ThinLog:
        return self._thin_logs.get(self._ledger_of(account).account_id) or ThinLog()

    # --------------------------------------------------------------- reads
    def get_v2_event(self, ident: str, *, account: str | None = None) -> JSON:
        """``GET /v2/core/events/{id}``: a thin event of the account (``Stripe-Context``), last 30 days."""
        with self.lock:
            found = self._thin_log(account).get(ident, self.clock.now() - THIN_RETENTION)
            if found is None:
                raise missing("event", ident, "id")
            return found

    def list_v2_events(
        self,
        *,
        types: list[str] | None = None,
        object_id: str | None = None,
        created: dict[str, Any] | None = None,
        limit: int | None = None,
        page: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """``GET /v2/core/events``: newest first, 30 days back; ``types`` (``*`` allowed), ``object_id``
        (the related object), ``created[gt|gte|lt|lte]`` (ISO 8601), ``limit``, ``page`` (from ``next_page_url``)."""
        n = check_limit(V2_DEFAULT_LIMIT if limit is None else limit)
        if types is not None and len(types) > 20:
            raise SimError("types may contain at most 20 event types", param="types")
        bounds = {op: parse_time(v, f"created[{op}]") for op, v in (created or {}).items()}
        patterns = list(types or [])

        def match(ev: JSON) -> bool:
            if patterns and not any(fnmatch.fnmatchcase(ev["type"], p) for p in patterns):
                return False
            related = ev.get("related_object") or {}
            return object_id is None or related.get("id") == object_id

        with self.lock:
            log = self._thin_log(account)
            data, more = log.page(
                floor=self.clock.now() - THIN_RETENTION, bounds=bounds, match=match, limit=n, older_than=page
            )
        next_url = None
        if more and data:
            query: list[tuple[str, Any]] = [("limit", n)]
            query += [(f"types[{i}]", t) for i, t in enumerate(patterns)]
            if object_id is not None:
                query.append(("object_id", object_id))
            query += [(f"created[{op}]", iso(v)) for op, v in bounds.items()]
            query.append(("page", data[-1]["id"]))
            next_url = "/v2/core/events?" + urlencode(query).replace("%5B", "[").replace("%5D", "]")
        return {"data": data, "next_page_url": next_url, "previous_page_url": None}

    def all_thin_events(self, type: str | None = None, account: str | None = None) -> list[JSON]:
        """Every thin event, oldest first (no 30-day window); ``account`` as in :meth:`truth` (``"all"``)."""
        with self.lock:
            events = self._all_thin if account == "all" else self._thin_log(account).events
            return [e for e in events if type is None or fnmatch.fnmatchcase(e["type"], type)]

    def thin_event_for(self, snapshot_event: str) -> JSON | None:
        """The thin twin of a v1 event (by the v1 event's id), None if it has none."""
        with self.lock:
            return self._thin_by_snapshot.get(snapshot_event)
