"""Our rows against Stripe's objects: what a reconciliation finds, state in, verdict out.

A row drifted when applying Stripe's snapshot through the transition rules
would change any of its columns (or, for a subscription, its items): the
comparison is the rules' own result, so every column is compared, the
derived ones (`access`, `owed_amount`) included, and nothing the rules would
not write counts. When the rules refuse the snapshot, either our row is
newer than the page (a webhook applied after it was fetched: left alone) or
our row is in a terminal state Stripe contradicts (`terminal_here`: the
rules keep a canceled subscription canceled, a paid or void invoice so;
counted and listed on their own, never passed off as newer).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from subsync.access import TERMINAL_STATUSES
from subsync.stripe_objects import InvoiceSnapshot, ItemSnapshot, SubscriptionSnapshot
from subsync.transitions import (
    TERMINAL_INVOICE_STATUSES,
    InvoiceState,
    SubscriptionState,
    changed_columns,
    next_invoice_state,
    next_subscription_state,
)

Kind = Literal["same", "created", "drifted", "newer_here", "terminal_here"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    changes: dict[str, list[Any]]  # column: [ours, after Stripe's] (JSON-ready); empty unless created/drifted


_SAME = Verdict("same", {})


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return getattr(value, "value", value)


def _items_json(items: Sequence[ItemSnapshot]) -> list[str]:
    """Each item as `id:price x quantity start..end`: a renewal of an item changes only its period."""
    return [
        f"{item.id}:{item.price_id}x{item.quantity}"
        f" {_json(item.current_period_start)}..{_json(item.current_period_end)}"
        for item in sorted(items, key=lambda item: item.id)
    ]


def _refused(ours_terminal: bool, theirs_terminal: bool) -> Verdict:
    return Verdict("terminal_here" if ours_terminal and not theirs_terminal else "newer_here", {})


def subscription(
    ours: SubscriptionState | None,
    our_items: Sequence[ItemSnapshot],
    theirs: SubscriptionSnapshot,
    seen_at: datetime,
    *,
    now: datetime,
    grace: timedelta,
    unpaid_invoice: InvoiceState | None,
    our_item_accounts: Collection[str | None] = (),
) -> Verdict:
    """What Stripe's snapshot (seen at `seen_at`) would change in our subscription row and items.

    `our_item_accounts`: the accounts our items are filed under; any other
    than the snapshot's is drift of the items (`items_account`).
    """
    after = next_subscription_state(ours, theirs, seen_at, now=now, grace=grace, unpaid_invoice=unpaid_invoice)
    if after is None:
        assert ours is not None  # only an existing row can refuse a snapshot
        return _refused(ours.status in TERMINAL_STATUSES, theirs.status in TERMINAL_STATUSES)
    old, new = changed_columns(ours, after)
    changes = {name: [None if old is None else old.get(name), value] for name, value in new.items()}
    if sorted(our_items, key=lambda item: item.id) != sorted(theirs.items, key=lambda item: item.id):
        changes["items"] = [_items_json(our_items), _items_json(theirs.items)]
    if set(our_item_accounts) - {theirs.account}:
        changes["items_account"] = [sorted(our_item_accounts, key=str), [theirs.account]]
    if not changes:
        return _SAME
    return Verdict("created" if ours is None else "drifted", changes)


def invoice(ours: InvoiceState | None, theirs: InvoiceSnapshot, seen_at: datetime) -> Verdict:
    """What Stripe's invoice (seen at `seen_at`) would change in our invoice row."""
    after = next_invoice_state(ours, theirs, seen_at)
    if after is None:
        assert ours is not None
        return _refused(ours.status in TERMINAL_INVOICE_STATUSES, theirs.status in TERMINAL_INVOICE_STATUSES)
    if ours is None:
        return Verdict("created", {"status": [None, after.status]})
    changes = {
        name: [_json(getattr(ours, name)), _json(getattr(after, name))]
        for name in vars(after)
        if name != "stripe_updated_at" and getattr(ours, name) != getattr(after, name)
    }
    return Verdict("drifted", changes) if changes else _SAME
