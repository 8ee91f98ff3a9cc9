"""A simulated clock: it starts at a given unix time and moves only when told."""

from __future__ import annotations

import threading
import time


class SimClock:
    """Integer-second simulated time. Only the owner advances it, never backwards."""

    def __init__(self, start: int | None = None) -> None:
        self._now = int(time.time()) if start is None else int(start)
        self._lock = threading.Lock()

    def now(self) -> int:
        with self._lock:
            return self._now

    def set(self, ts: int) -> None:
        """Move the clock to ``ts`` (must not go backwards)."""
        ts = int(ts)
        with self._lock:
            if ts < self._now:
                raise ValueError(f"clock cannot go backwards ({ts} < {self._now})")
            self._now = ts
