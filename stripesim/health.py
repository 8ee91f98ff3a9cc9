"""Events Stripe fails to generate, and the ``v2.core.health.event_generation_failure.resolved`` that follows.

``fail_event_generation`` arms a failure: the next matching v1 event is never
generated (the change itself happens; the event is not in ``/v1/events``,
has no thin twin and reaches no endpoint). ``resolve_after`` simulated
seconds later (or at ``resolve_event_generation_failures``) the platform gets
one thin health event per lost event. Only thin-payload endpoints receive it,
as it is a v2 event; its ``data`` (what was lost: the event type and the
related object with its v1 url) is a fetched attribute, read with
``GET /v2/core/events/{id}``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from .model import SimError
from .shapes import JSON
from .thin import THIN_OBJECT, iso, pushed, related_object
from .thin_events import ThinEventsMixin

HEALTH_TYPE = "v2.core.health.event_generation_failure.resolved"
SUMMARY = "We have failed to create a notification for your Stripe account."


@dataclass
class _Rule:
    type: str  # pattern of the v1 type
    remaining: int
    object: str | None
    account: str | None
    resolve_after: int | None


@dataclass
class _Failure:
    alert_id: str
    grouping_key: str
    event_type: str
    related: JSON | None
    account: str | None
    failed_at: int
    endpoints: int
    resolved_event: str | None = None


class EventGenerationMixin(ThinEventsMixin):
    """Armed failures, the lost events, and their health events (thin events of the platform)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gen_rules: list[_Rule] = []
        self._gen_failures: dict[str, _Failure] = {}  # by alert id, in failure order

    def fail_event_generation(
        self,
        type: str = "*",
        *,
        n: int = 1,
        object: str | None = None,
        account: str | None = None,
        resolve_after: int | None = 3600,
    ) -> JSON:
        """Lose the next ``n`` v1 events of ``type`` (``*`` wildcards) in ``account``, on ``object`` if given.

        ``resolve_after``: simulated seconds from each loss to its health event;
        None (or a negative number) leaves it for :meth:`resolve_event_generation_failures`.
        """
        if int(n) < 1:
            raise SimError("n must be >= 1", param="n")
        after = None if resolve_after is None or int(resolve_after) < 0 else int(resolve_after)
        with self.lock:
            acct = self._ledger_of(account).account_id
            rule = _Rule(type, int(n), object, acct, after)
            self._gen_rules.append(rule)
            return self._rule_json(rule)

    @staticmethod
    def _rule_json(rule: _Rule) -> JSON:
        return {
            "type": rule.type,
            "remaining": rule.remaining,
            "object": rule.object,
            "account": rule.account,
            "resolve_after": rule.resolve_after,
        }

    def _emit(self, type_: str, obj: JSON, previous: JSON | None = None) -> JSON | None:
        if self._gen_rules and not self._quiet and self._generation_fails(type_, obj):
            return None
        return super()._emit(type_, obj, previous)

    def _generation_fails(self, type_: str, obj: JSON) -> bool:
        acct = self._ledger.account_id
        for rule in self._gen_rules:
            if (
                rule.account == acct
                and fnmatch.fnmatchcase(type_, rule.type)
                and (rule.object is None or obj.get("id") == rule.object)
            ):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._gen_rules.remove(rule)
                self._lose(type_, obj, acct, rule.resolve_after)
                return True
        return False

    def _lose(self, type_: str, obj: JSON, acct: str | None, resolve_after: int | None) -> None:
        now = self.clock.now()
        failure = _Failure(
            alert_id=self.thin_ids.new("halert_61", 46),
            grouping_key=self.thin_ids.new("_grouping_", 50),
            event_type=type_,
            related=related_object(obj),
            account=acct,
            failed_at=now,
            endpoints=len(self.delivery.endpoints) + len(self.delivery.thin_endpoints),
        )
        self._gen_failures[failure.alert_id] = failure
        if resolve_after is not None:
            self._schedule(now + resolve_after, "generation_resolved", failure.alert_id, 0)

    def _on_generation_resolved(self, ident: str, token: int) -> None:
        del token
        failure = self._gen_failures.get(ident)
        if failure is not None and failure.resolved_event is None:
            self._resolve(failure)

    def resolve_event_generation_failures(self) -> list[JSON]:
        """Emit the health event of every loss not yet resolved, now; returns them (as fetched)."""
        with self.lock:
            return [self._resolve(f) for f in list(self._gen_failures.values()) if f.resolved_event is None]

    def event_generation_failures(self) -> list[JSON]:
        """Every lost event so far: its type, related object, account, when, and its health event's id."""
        with self.lock:
            return [
                {
                    "alert_id": f.alert_id,
                    "event_type": f.event_type,
                    "related_object": f.related,
                    "account": f.account,
                    "failed_at": f.failed_at,
                    "resolved_event": f.resolved_event,
                }
                for f in self._gen_failures.values()
            ]

    def _resolve(self, failure: _Failure) -> JSON:
        """The health event: the platform's (context null), the lost event's account in ``impact``."""
        now = self.clock.now()
        impact: JSON = {}
        if failure.account is not None:
            impact["account"] = failure.account
            impact["context"] = failure.account
        related = failure.related or {}
        impact.update(
            {
                "event_type": failure.event_type,
                "livemode": self.livemode,
                "missing_delivery_attempts": failure.endpoints,
                "related_object_id": related.get("id"),
                "related_object": failure.related,
            }
        )
        event: JSON = {
            "id": self.thin_ids.new(),
            "object": THIN_OBJECT,
            "changes": None,
            "context": None,
            "created": iso(now),
            "data": {
                "alert_id": failure.alert_id,
                "grouping_key": failure.grouping_key,
                "impact": impact,
                "resolved_at": iso(now),
                "severity": "critical",
                "summary": SUMMARY,
            },
            "livemode": self.livemode,
            "reason": None,
            "related_object": None,
            "snapshot_event": None,
            "type": HEALTH_TYPE,
        }
        failure.resolved_event = event["id"]
        self._add_thin(event, now, None)
        self.delivery.submit(pushed(event))
        return event
