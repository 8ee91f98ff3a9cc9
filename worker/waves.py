"""Which of a message's events can be applied together: pure planning, no I/O.

A handler applies a group of events of its kind in a few statements (one
locked read and one write per table), instead of a few round trips per
event. Two events may only share a group when neither depends on the other:
they name no lock key in common (subsync.store.locks: a key covers every row
its writers touch). So the events are laid out in waves: an event goes in the
wave after the last one holding any of its keys, and within a wave, events
of one group key (the handler, and who applies them) form one group. Events
sharing a key keep the order they were received in; events sharing none may
be applied in either order, as they may be by two workers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def plan_groups(
    items: Sequence[T], keys: Callable[[T], Iterable[str]], group_key: Callable[[T], Hashable]
) -> list[list[T]]:
    """`items` (in received order) as groups to apply one after the other (module docstring).

    Every group holds items of one `group_key` that share no key; an item
    comes in a later group than every earlier item it shares a key with.
    Each group keeps the received order.
    """
    last_wave: dict[str, int] = {}
    waves: list[dict[Hashable, list[T]]] = []
    for item in items:
        item_keys = list(keys(item))
        wave = 1 + max((last_wave[k] for k in item_keys if k in last_wave), default=-1)
        for k in item_keys:
            last_wave[k] = wave
        if wave == len(waves):
            waves.append({})
        waves[wave].setdefault(group_key(item), []).append(item)
    return [group for wave_groups in waves for group in wave_groups.values()]
