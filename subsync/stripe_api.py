"""Stripe's API, the source of truth, through the official library.

`raw_request` still goes through the library (auth, HTTP client, error
classes, its retries) but skips building a StripeObject tree for every
object: a large reconciliation would spend most of its time building
objects it only reads a few fields of.

Stripe's answer carries a `Date` header: that is the time a snapshot is
true as of (`seen_at`), compared with event `created` times to decide which
is newer. Our own clock is never used for that.

Connect: an object of a connected account exists only on that account:
every call for one names it (`account=`, sent as `Stripe-Account`). A thin
event names its account as a `context`, which is sent back as Stripe-Context
(`context=`): the header Stripe's v2 API reads, and the one Stripe's
libraries fetch a thin event and its object with.

Pacing: the library retries a 429 only when Stripe says `Stripe-Should-Retry`,
so calls here are paced (`max_rps`) and back off on RateLimitError themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import stripe

from subsync import config, logs

log = logs.get_logger(__name__)

PAGE_SIZE = 100  # Stripe's maximum
DEFAULT_MAX_RPS = 25.0  # Stripe's read limit in test mode; live mode allows 100
RATE_LIMIT_RETRIES = 6
RATE_LIMIT_BACKOFF_S = 1.0  # doubles each retry: 1, 2, 4 ... 32 s
NETWORK_RETRIES = 3


@dataclass(frozen=True)
class Snapshot:
    """One object as Stripe's API returned it, and when it was true."""

    data: dict[str, Any]
    seen_at: datetime


def _seen_at(headers: Mapping[str, str] | None) -> datetime:
    raw = (headers or {}).get("Date") or (headers or {}).get("date")
    if raw:
        try:
            return parsedate_to_datetime(raw).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


def error_time(exc: stripe.StripeError) -> datetime:
    """Stripe's time of an error answer (its `Date`), for a refusal that is itself a fact (no such object)."""
    return _seen_at(exc.headers)


@dataclass
class StripeApi:
    client: stripe.StripeClient
    livemode: bool = False  # the key's mode: the mode of everything this API answers
    max_rps: float = DEFAULT_MAX_RPS
    sleep: Any = time.sleep
    _next_slot: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _pace(self) -> None:
        if self.max_rps <= 0:
            return
        with self._lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + 1.0 / self.max_rps
        if wait > 0:
            self.sleep(wait)

    def get(
        self, path: str, *, account: str | None = None, context: str | None = None, **params: Any
    ) -> tuple[dict[str, Any], datetime]:
        """GET `path` (of connected `account`, with `Stripe-Account`; or in a thin event's `context`, with
        `Stripe-Context`); the JSON body and Stripe's time of it."""
        return self._request("get", path, account=account, context=context, **params)

    def _request(
        self, method: str, path: str, *, account: str | None = None, context: str | None = None, **params: Any
    ) -> tuple[dict[str, Any], datetime]:
        if account is not None:
            params["stripe_account"] = account
        if context is not None:
            params["stripe_context"] = context
        delay = RATE_LIMIT_BACKOFF_S
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            self._pace()
            try:
                response = self.client.raw_request(method, path, **params)
            except stripe.RateLimitError:
                if attempt == RATE_LIMIT_RETRIES:
                    raise
                log.warning("stripe_rate_limited", path=path, retry_in_s=delay)
                self.sleep(delay)
                delay *= 2
                continue
            return response.data, _seen_at(response.headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def post(
        self, path: str, *, idempotency_key: str, account: str | None = None, **params: Any
    ) -> tuple[dict[str, Any], datetime]:
        """POST `path` with an idempotency key: sent again (a rate limit, a network retry, a second run),
        Stripe answers with the first request's result instead of acting twice."""
        return self._request("post", path, account=account, idempotency_key=idempotency_key, **params)

    def retrieve_subscription(self, subscription_id: str, *, account: str | None = None) -> Snapshot:
        data, seen_at = self.get(f"/v1/subscriptions/{subscription_id}", account=account)
        return Snapshot(data, seen_at)

    def retrieve_event(self, event_id: str, *, account: str | None = None) -> Snapshot:
        data, seen_at = self.get(f"/v1/events/{event_id}", account=account)
        return Snapshot(data, seen_at)

    def list_pages(self, path: str, *, account: str | None = None, **params: Any) -> Iterator[list[Snapshot]]:
        """Every object of a list endpoint, a page at a time (`starting_after`), streaming."""
        for items, seen_at in self.page_answers(path, account=account, **params):
            if items:
                yield [Snapshot(item, seen_at) for item in items]

    def page_answers(
        self, path: str, *, account: str | None = None, **params: Any
    ) -> Iterator[tuple[list[dict[str, Any]], datetime]]:
        """Each page of a list endpoint as Stripe answered it, with its time: the first one even when empty."""
        params = {"limit": PAGE_SIZE, **params}
        while True:
            page, seen_at = self.get(path, account=account, **params)
            items = page.get("data") or []
            yield items, seen_at
            if not page.get("has_more") or not items:
                return
            params["starting_after"] = items[-1]["id"]

    def subscription_pages(self, *, account: str | None = None) -> Iterator[list[Snapshot]]:
        """Every subscription Stripe has (of `account`), canceled ones included (`status=all`), a page at a time."""
        return self.list_pages("/v1/subscriptions", account=account, status="all")

    def retrieve_invoice(self, invoice_id: str, *, account: str | None = None) -> Snapshot:
        data, seen_at = self.get(f"/v1/invoices/{invoice_id}", account=account)
        return Snapshot(data, seen_at)

    def invoice_pages(self, *, created_gte: int, account: str | None = None) -> Iterator[list[Snapshot]]:
        """The invoices (of `account`) created since `created_gte`, newest first, a page at a time."""
        return self.list_pages("/v1/invoices", account=account, created={"gte": created_gte})

    def refund_pages(self, *, created_gte: int, account: str | None = None) -> Iterator[list[Snapshot]]:
        """The refunds (of `account`) created since `created_gte`, newest first, a page at a time."""
        return self.list_pages("/v1/refunds", account=account, created={"gte": created_gte})

    def dispute_pages(self, *, created_gte: int, account: str | None = None) -> Iterator[list[Snapshot]]:
        """The disputes (of `account`) created since `created_gte`, newest first, a page at a time."""
        return self.list_pages("/v1/disputes", account=account, created={"gte": created_gte})

    def charge_refunds(self, charge_id: str, *, account: str | None = None) -> list[dict[str, Any]]:
        """Every refund of a charge (`GET /v1/refunds?charge=`), to the end."""
        pages = self.list_pages("/v1/refunds", account=account, charge=charge_id)
        return [snapshot.data for page in pages for snapshot in page]

    def event_pages(self, *, created_gte: int | None = None, account: str | None = None) -> Iterator[list[Snapshot]]:
        """Stripe's events (of `account`) newest first (it keeps 30 days of them), a page at a time."""
        params = {} if created_gte is None else {"created": {"gte": created_gte}}
        return self.list_pages("/v1/events", account=account, **params)


def make_api(settings: config.Settings, *, max_rps: float = DEFAULT_MAX_RPS) -> StripeApi:
    """A client for STRIPE_API_KEY at STRIPE_API_BASE (Stripe's own when unset)."""
    key = settings.require_stripe_api_key()
    bases = {"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None
    client = stripe.StripeClient(key, base_addresses=bases, max_network_retries=NETWORK_RETRIES)  # type: ignore[arg-type]
    by_key = config.key_livemode(key)
    livemode = bool(settings.livemode) if by_key is None else by_key
    return StripeApi(client=client, max_rps=max_rps, livemode=livemode)
