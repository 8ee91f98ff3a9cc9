"""O(page) cursor pagination over id lists kept in creation order."""

from __future__ import annotations

from collections.abc import Callable, Sequence


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
