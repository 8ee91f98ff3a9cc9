"""O(page) cursor pagination over id lists kept in creation order, and ``created`` filters by bisection."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import overload

from .model import SimError
from .shapes import JSON


def paginate(
    ids: Sequence[str],
    position: Callable[[str], int],
    match: Callable[[str], bool],
    limit: int,
    *,
    starting_after: str | None = None,
    ending_before: str | None = None,
    lo: int = 0,
    hi: int | None = None,
) -> tuple[list[str], bool]:
    """One page, newest first, of ``ids`` (stored oldest first) within ``[lo, hi)``.

    Like Stripe: ``starting_after`` gives the items older than that id,
    ``ending_before`` the ``limit`` items just newer than it (still listed
    newest first). Returns the page and ``has_more``.
    """
    top = len(ids) if hi is None else hi
    out: list[str] = []
    if ending_before is not None:
        i = max(position(ending_before) + 1, lo)
        while i < top and len(out) <= limit:
            if match(ids[i]):
                out.append(ids[i])
            i += 1
        has_more = len(out) > limit
        out = out[:limit]
        out.reverse()
        return out, has_more
    i = top - 1 if starting_after is None else min(position(starting_after) - 1, top - 1)
    while i >= lo and len(out) <= limit:
        if match(ids[i]):
            out.append(ids[i])
        i -= 1
    return out[:limit], len(out) > limit


def check_limit(limit: int | None) -> int:
    """A list's ``limit``: 10 when absent, else 1..100."""
    if limit is None:
        return 10
    if not 1 <= int(limit) <= 100:
        raise SimError(
            "Invalid integer: limit must be between 1 and 100", code="parameter_invalid_integer", param="limit"
        )
    return int(limit)


def position_of(index: dict[str, int], kind: str) -> Callable[[str], int]:
    """A cursor's position in ``index``; an unknown cursor is Stripe's 400 ``resource_missing``."""

    def position(ident: str) -> int:
        pos = index.get(ident)
        if pos is None:
            raise SimError(f"No such {kind}: '{ident}'", status=400, code="resource_missing", param="starting_after")
        return pos

    return position


def created_range(created: Sequence[int], bounds: dict[str, int]) -> tuple[int, int]:
    """The slice ``[lo, hi)`` of ascending ``created`` times within ``created[gte|gt|lte|lt|eq]``."""
    lo, hi = 0, len(created)
    for op, value in bounds.items():
        v = int(value)
        if op == "gte":
            lo = max(lo, bisect.bisect_left(created, v))
        elif op == "gt":
            lo = max(lo, bisect.bisect_right(created, v))
        elif op == "lte":
            hi = min(hi, bisect.bisect_right(created, v))
        elif op == "lt":
            hi = min(hi, bisect.bisect_left(created, v))
        elif op == "eq":
            lo = max(lo, bisect.bisect_left(created, v))
            hi = min(hi, bisect.bisect_right(created, v))
        else:
            raise SimError(f"Invalid created filter: {op}", param="created")
    return lo, max(lo, hi)


def created_range_by(ids: list[str], created: dict[str, int] | None, key: Callable[[str], int]) -> tuple[int, int]:
    """:func:`created_range` over ids kept in creation order, ``key`` giving each one's ``created``."""
    if not created:
        return 0, len(ids)
    return created_range(KeyView(ids, key), created)


class EventIds(Sequence[str]):
    """A read-only sequence view of event ids."""

    def __init__(self, events: list[JSON]) -> None:
        self._events = events

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [e["id"] for e in self._events[i]]
        return self._events[i]["id"]


class KeyView(Sequence[int]):
    """A sequence of keys (for bisect) over an id list."""

    def __init__(self, ids: list[str], key: Callable[[str], int]) -> None:
        self._ids = ids
        self._key = key

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> list[int]: ...
    def __getitem__(self, i: int | slice) -> int | list[int]:
        if isinstance(i, slice):
            return [self._key(ident) for ident in self._ids[i]]
        return self._key(self._ids[i])
