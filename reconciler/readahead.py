"""Reading the next page from Stripe while this one is compared and written.

A page costs a round trip to Stripe (their work, the transfer, JSON decoding)
and then our own work (comparison, PostgreSQL); one after the other, the
two add up. A thread fetching one page ahead overlaps them: PostgreSQL's and
Stripe's time is spent while the other side runs. At most `depth` pages wait
in the queue, so memory stays flat.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar, cast

T = TypeVar("T")

_POLL_S = 0.1  # how soon a producer notices that the consumer has stopped
_END = object()


def read_ahead(source: Iterator[T], depth: int = 1, *, name: str = "read-ahead") -> Iterator[T]:
    """The items of `source`, produced by a thread up to `depth` ahead of the consumer.

    An exception in `source` is raised in the consumer, where the next item
    would have come. When the consumer stops early (an error of its own, or
    it breaks out), the producer stops after the item it is producing, and
    this generator returns only once that thread has ended.
    """
    items: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stopping = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stopping.is_set():
            try:
                items.put(entry, timeout=_POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put((_END, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield cast(T, item)
    finally:
        stopping.set()
        thread.join()
