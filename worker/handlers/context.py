"""What a handler is given: the event's object, its Stripe time, who applies it, and the clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from subsync.reversals import PaymentLinks
from subsync.store.events import Outcome
from subsync.store.subscriptions import Source
from subsync.stripe_objects import ts


@dataclass(frozen=True)
class Context:
    event_id: str
    event_type: str
    created: datetime  # the event's `created`: Stripe's time of its snapshot
    obj: dict[str, Any]
    source: Source  # 'webhook', or 'replay' for an event queued again by hand
    now: datetime
    grace: timedelta
    account: str | None = None  # the connected account of the event; None: the platform's own
    # The object was fetched from Stripe's API for a thin event: it is the
    # object's state now, not when the event happened.
    fetched: bool = False
    # data.previous_attributes: what the event says changed, as it was before.
    previous: dict[str, Any] | None = None
    # A refund's or dispute's charge: whose payment it was, fetched for the event.
    links: PaymentLinks | None = None


# Beside a refund's or dispute's object in the event to apply: whose payment
# it was (worker.money fetches it before the transaction).
PAYMENT_LINKS = "payment_links"

# A handler applies a batch of events of its kind, in received order, that
# share no lock key (worker.waves) and one source; an outcome for each.
Handler = Callable[[psycopg.Connection[Any], Sequence[Context]], list[Outcome]]


def shared(batch: Sequence[Context]) -> tuple[datetime, timedelta, Source]:
    """The clock, grace period and source a batch is applied with: the last event's clock, which is the latest."""
    sources = {ctx.source for ctx in batch}
    if len(sources) != 1:
        msg = f"a batch applied with one source, not {sorted(sources)}"
        raise ValueError(msg)
    return batch[-1].now, batch[-1].grace, batch[-1].source


def context_for(
    event_id: str, payload: dict[str, Any], *, replayed: bool, grace: timedelta, fetched: bool = False
) -> Context:
    created = ts(payload["created"])
    assert created is not None
    return Context(
        event_id=event_id,
        event_type=payload["type"],
        created=created,
        obj=payload["data"]["object"],
        source="replay" if replayed else "webhook",
        now=datetime.now(UTC),
        grace=grace,
        account=payload.get("account") if isinstance(payload.get("account"), str) else None,
        fetched=fetched,
        previous=_previous(payload["data"]),
        links=PaymentLinks.from_json(payload.get(PAYMENT_LINKS)),
    )


def _previous(data: dict[str, Any]) -> dict[str, Any] | None:
    previous = data.get("previous_attributes")
    return previous if isinstance(previous, dict) else None
