"""Records kept in creation order, and one page of them as a Stripe list.

The clock never goes back, so creation order is also ``created`` order: a
``created[...]`` filter is a slice found by bisection, a page is O(its size)
(``listing.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from .listing import check_limit, created_range_by, paginate, position_of
from .shapes import JSON


class Record(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def created(self) -> int: ...


R = TypeVar("R", bound=Record)


class Table(Generic[R]):
    """Records by id, with their ids in creation order."""

    def __init__(self) -> None:
        self.rows: dict[str, R] = {}
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}

    def add(self, row: R) -> R:
        self.pos[row.id] = len(self.ids)
        self.ids.append(row.id)
        self.rows[row.id] = row
        return row

    def get(self, ident: str | None) -> R | None:
        return None if ident is None else self.rows.get(ident)

    def __contains__(self, ident: object) -> bool:
        return ident in self.rows

    def __iter__(self) -> Iterator[R]:
        return (self.rows[i] for i in self.ids)

    def __len__(self) -> int:
        return len(self.ids)


def list_page(
    table: Table[R],
    *,
    kind: str,
    url: str,
    render: Callable[[R], JSON],
    match: Callable[[R], bool] | None = None,
    created: dict[str, int] | None = None,
    limit: int | None = None,
    starting_after: str | None = None,
    ending_before: str | None = None,
    ids: list[str] | None = None,
) -> JSON:
    """A Stripe list of ``table``'s records (or of ``ids``, a creation-ordered subset), newest first."""
    n = check_limit(limit)
    rows = table.rows
    order = table.ids if ids is None else ids
    pos = position_of(table.pos if ids is None else {i: k for k, i in enumerate(order)}, kind)
    lo, hi = created_range_by(order, created, lambda ident: rows[ident].created)
    test = (lambda _i: True) if match is None else (lambda ident: match(rows[ident]))
    page, more = paginate(order, pos, test, n, starting_after=starting_after, ending_before=ending_before, lo=lo, hi=hi)
    return {"object": "list", "data": [render(rows[i]) for i in page], "has_more": more, "url": url}
