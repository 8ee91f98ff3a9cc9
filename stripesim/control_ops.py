"""The ``/_sim`` operations of thin events, lost events, invoices changed by hand and plan changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .shapes import JSON
from .state import Simulator

EVENT_READ_ONLY_OPS = frozenset({"thin_events", "event_generation_failures"})


def event_and_invoice_operations(sim: Simulator) -> dict[str, Callable[..., Any]]:
    """``/_sim/<op>`` entries (op name -> callable taking the JSON body as keywords)."""

    def thin_events(type: str | None = None, account: str | None = None) -> JSON:
        return {"events": sim.all_thin_events(type, account=account)}

    def failures() -> JSON:
        return {"failures": sim.event_generation_failures()}

    def resolve() -> JSON:
        return {"events": sim.resolve_event_generation_failures()}

    return {
        "thin_events": thin_events,
        "fail_event_generation": sim.fail_event_generation,
        "resolve_event_generation_failures": resolve,
        "event_generation_failures": failures,
        "finalize_invoice": sim.finalize_invoice,
        "void_invoice": sim.void_invoice,
        "mark_uncollectible": sim.mark_uncollectible,
        "change_subscription_price": sim.change_subscription_price,
    }
