"""Reads of PostgreSQL and Redis that answer in bounded time whatever the servers do.

/readyz and /metrics run on the web server's threads, the same ones that
acknowledge Stripe's deliveries. A read of a stalled server (one that takes
connections and never answers) would hold such a thread for as long as the
client's timeouts and retries allow. A `Probe` runs its read on a thread of
its own, one at a time: a caller waits for it at most until its deadline,
and a caller that finds a read already running past its deadline answers at
once that the server does not answer. However many probes arrive during a
stall, one thread waits on the server, and every caller is back within
`timeout`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

T = TypeVar("T")


class ProbeTimeout(Exception):
    """The server did not answer within the probe's time."""


class Probe(Generic[T]):
    def __init__(self, read: Callable[[], T], *, timeout: float, name: str) -> None:
        self._read = read
        self.timeout = timeout
        self._name = name
        self._lock = threading.Lock()
        self._running: Future[T] | None = None
        self._started = 0.0

    def start(self) -> tuple[Future[T], float]:
        """The read in flight (starting one if none is), and when it is due."""
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                self._started = time.monotonic()
                thread = threading.Thread(target=self._run, args=(self._running,), name=f"probe-{self._name}")
                thread.daemon = True
                thread.start()
            return self._running, self._started + self.timeout

    def result(self) -> T:
        """The read's value; ProbeTimeout if it is not back by its deadline; its exception if it failed."""
        future, due = self.start()
        try:
            return future.result(timeout=max(0.0, due - time.monotonic()))
        except FutureTimeout:
            msg = f"no answer within {self.timeout:g} s"
            raise ProbeTimeout(msg) from None

    def _run(self, future: Future[T]) -> None:
        try:
            future.set_result(self._read())
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, who report it
            future.set_exception(exc)
