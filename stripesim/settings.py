"""Billing and delivery settings, API rate limits and shutdown."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .core import SimCore, operation
from .model import SimError
from .shapes import JSON


class SettingsMixin(SimCore):
    @operation
    def configure(
        self,
        *,
        dunning_end: str | None = None,
        retry_schedule_days: Iterable[float] | None = None,
        finalize_delay: int | None = None,
        trial_will_end_days: int | None = None,
        checkout_expiry: int | None = None,
        incomplete_expiry: int | None = None,
        payment_events: bool | None = None,
    ) -> JSON:
        """Billing settings: how dunning ends, the retry schedule (days after the first failure), and whether
        payments emit their own events (``payment_events``, see ``charges.py``)."""
        if dunning_end is not None:
            self._check_dunning_end(dunning_end)
            self.dunning_end = dunning_end
        if retry_schedule_days is not None:
            self.retry_schedule_days = [float(d) for d in retry_schedule_days]
        if finalize_delay is not None:
            self.finalize_delay = int(finalize_delay)
        if trial_will_end_days is not None:
            self.trial_will_end_days = int(trial_will_end_days)
        if checkout_expiry is not None:
            self.checkout_expiry = int(checkout_expiry)
        if incomplete_expiry is not None:
            self.incomplete_expiry = int(incomplete_expiry)
        if payment_events is not None:
            self.payment_events = bool(payment_events)
        return self.settings()

    def settings(self) -> JSON:
        with self.lock:
            return {
                "api_version": self.api_version,
                "livemode": self.livemode,
                "platform_account": self.platform_id,
                "connected_accounts": list(self.connected),
                "now": self.clock.now(),
                "dunning_end": self.dunning_end,
                "retry_schedule_days": list(self.retry_schedule_days),
                "finalize_delay": self.finalize_delay,
                "trial_will_end_days": self.trial_will_end_days,
                "checkout_expiry": self.checkout_expiry,
                "incomplete_expiry": self.incomplete_expiry,
                "payment_events": self.payment_events,
                "webhook_urls": [ep.url for ep in self.delivery.endpoints],
                "thin_webhook_urls": [ep.url for ep in self.delivery.thin_endpoints],
                "delivery": self.delivery.settings_dict(),
                "rate_limit": dict(self._rate_limit),
                "latency": [[m, p, s, n] for (m, p), (s, n) in self._latency.items()],  # not yet taken
            }

    def configure_delivery(
        self,
        *,
        urls: Iterable[str] | None = None,
        secret: str | None = None,
        seed: int | None = None,
        thin_urls: Iterable[str] | None = None,
        **settings: Any,
    ) -> JSON:
        """Webhook endpoints (``urls`` snapshot payloads, ``thin_urls`` thin ones), secret(s)
        (comma-separated, for both) and chaos/retry settings.

        Settings: duplicate_rate, resend_rate, drop_rate, reorder_window,
        reorder_hold, delay, max_attempts, retry_initial, retry_factor,
        retry_max, timeout, paused, body_format, concurrency, drop_types.
        """
        with self.lock:
            if secret is not None:
                self.webhook_secret = secret
            if urls is not None or secret is not None:
                current = [ep.url for ep in self.delivery.endpoints]
                self._set_urls(list(urls) if urls is not None else current, self.webhook_secret)
            if thin_urls is not None or secret is not None:
                current = [ep.url for ep in self.delivery.thin_endpoints]
                self._set_thin_urls(list(thin_urls) if thin_urls is not None else current, self.webhook_secret)
            if seed is not None:
                self.delivery.reseed(seed)
            try:
                self.delivery.configure(**settings)
            except ValueError as exc:
                raise SimError(str(exc)) from None
            return self.settings()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (wall clock) until every queued webhook was delivered or given up."""
        return self.delivery.flush(timeout)

    def delivery_stats(self) -> JSON:
        return self.delivery.stats()

    def set_rate_limit(self, every: int | None = None, next: int | None = None) -> JSON:
        """Answer 429 to every Nth API request, and/or to the next N; nothing clears it."""
        with self.lock:
            self._rate_limit = {}
            if every:
                self._rate_limit["every"] = int(every)
            if next:
                self._rate_limit["next"] = int(next)
            self._api_requests = 0
            return dict(self._rate_limit)

    def take_rate_limit(self) -> bool:
        """Count one API request; True when it must be answered 429."""
        with self.lock:
            self._api_requests += 1
            left = self._rate_limit.get("next", 0)
            if left > 0:
                self._rate_limit["next"] = left - 1
                if left == 1:
                    del self._rate_limit["next"]
                return True
            every = self._rate_limit.get("every", 0)
            return bool(every) and self._api_requests % every == 0

    def set_latency(self, path: str, seconds: float, *, method: str = "POST", next: int = 1) -> JSON:
        """The next `next` API requests `method path` take `seconds` (wall clock) before they run, as Stripe
        does under load: an idempotency key they carry is in use meanwhile. 0 seconds clears it."""
        with self.lock:
            if float(seconds) > 0 and int(next) > 0:
                self._latency[(method.upper(), path)] = (float(seconds), int(next))
            else:
                self._latency.pop((method.upper(), path), None)
            return {"latency": [[m, p, s, n] for (m, p), (s, n) in self._latency.items()]}

    def take_latency(self, method: str, path: str) -> float:
        """Count one request `method path`; the seconds it must wait before it runs (0: none)."""
        with self.lock:
            seconds, left = self._latency.get((method, path), (0.0, 0))
            if left <= 1:
                self._latency.pop((method, path), None)
            else:
                self._latency[(method, path)] = (seconds, left - 1)
            return seconds

    def close(self) -> None:
        self.delivery.close()
