"""A burst of realistic Stripe events from the project's simulator, cached on disk.

A few thousand customers join over a month, then the clock runs on for
months: renewals, failed payments and their retries, trials, cancellations
now and at period end, checkout sessions, customer updates and deletions.
Nothing is delivered: the events are read back with `all_events()`, oldest
first, and the first `n` kept. Generating 50,000 takes a while, so the set is
written to bench/results/ keyed by size and seed and read from there next time.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from stripesim.model import SimError
from stripesim.state import Simulator

DAY = 86400
START = 1_735_689_600  # 2025-01-01, fixed so that a seed always gives the same burst
# Roughly how many events one customer yields over the months simulated.
EVENTS_PER_CUSTOMER = 16
JOIN_DAYS = 30
MAX_DAYS = 400


def burst(n: int, seed: int = 1) -> list[str]:
    """`n` events as compact JSON strings (the bodies Stripe would send), oldest first."""
    path = RESULTS / f"pipeline-events-{n}-{seed}.jsonl"
    if path.exists():
        return path.read_text().splitlines()
    bodies = [json.dumps(e, separators=(",", ":")) for e in _simulate(n, seed)]
    _write(path, bodies)
    return bodies


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)  # never a half-written cache


def _simulate(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    sim = Simulator(start=START, seed=seed)
    customers = max(20, n // EVENTS_PER_CUSTOMER)
    per_day = -(-customers // JOIN_DAYS)
    subs: list[str] = []
    joined = 0
    for _day in range(MAX_DAYS):
        for _ in range(min(per_day, customers - joined)):
            _join(sim, rng, subs, joined)
            joined += 1
        for sub in rng.sample(subs, k=min(len(subs), max(1, len(subs) // 60))):
            _act(sim, rng, sub)
        sim.advance(DAY)
        if len(sim.events) >= n and joined >= customers:
            break
    sim.close()
    events = sim.all_events()
    if len(events) < n:
        msg = f"the simulation yielded {len(events)} events, fewer than {n}"
        raise RuntimeError(msg)
    return events[:n]


def _join(sim: Simulator, rng: random.Random, subs: list[str], i: int) -> None:
    """One new customer: by checkout or directly, maybe with a trial, maybe a failing card."""
    cus = sim.create_customer(email=f"bench{i}@example.com", name=f"Bench {i}")["id"]
    roll = rng.random()
    if roll < 0.15:
        sim.fail_next_payments(cus, n=rng.randint(1, 4))
    elif roll < 0.20:
        sim.fail_next_payments(cus, until_new_card=True)
    kind = rng.random()
    if kind < 0.15:
        session = sim.create_checkout_session(mode="subscription", customer=cus, price="price_premium_monthly")
        sim.complete_checkout_session(session["id"])
        sub = sim.get_checkout_session(session["id"]).get("subscription")
    else:
        trial = 14 if kind < 0.35 else None
        price = "price_premium_yearly" if rng.random() < 0.1 else "price_premium_monthly"
        sub = sim.create_subscription(cus, price=price, trial_days=trial)["id"]
    if isinstance(sub, str):
        subs.append(sub)
    if rng.random() < 0.08:
        session = sim.create_checkout_session(mode="payment", customer=cus, amount_total=rng.randint(500, 9000))
        sim.complete_checkout_session(session["id"])


def _act(sim: Simulator, rng: random.Random, sub_id: str) -> None:
    """Something a customer does on a given day; some of it is refused for the state it is in."""
    sub = sim.get_subscription(sub_id)
    cus = sub["customer"]
    roll = rng.random()
    try:
        if roll < 0.25:
            sim.cancel_subscription(sub_id, at_period_end=True)
        elif roll < 0.35:
            sim.cancel_subscription(sub_id)
        elif roll < 0.45:
            sim.uncancel_subscription(sub_id)
        elif roll < 0.60:
            sim.update_subscription_metadata(sub_id, {"seats": str(rng.randint(1, 50))})
        elif roll < 0.75:
            sim.fail_next_payments(cus, n=rng.randint(1, 3))
        elif roll < 0.85:
            sim.pay_open_invoice(subscription=sub_id)
        elif roll < 0.95:
            sim.update_customer(cus, name=f"Renamed {rng.randint(0, 9999)}")
        else:
            sim.delete_customer(cus)
    except SimError:  # a refused operation is part of the mix
        pass
