"""Probes: a read of a stalled server holds one thread, never its callers past the deadline."""

from __future__ import annotations

import threading
import time

import pytest

from webhooks.probes import Probe, ProbeTimeout


def test_a_read_that_answers_gives_its_value_and_a_failure_its_exception():
    assert Probe(lambda: 42, timeout=1, name="t").result() == 42

    def boom() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        Probe(boom, timeout=1, name="t").result()


def test_callers_of_a_stalled_read_are_back_by_its_deadline_and_share_one_read():
    release = threading.Event()
    calls = []

    def stalled() -> str:
        calls.append(1)
        release.wait(30)
        return "late"

    probe = Probe(stalled, timeout=0.3, name="t")
    outcomes = []

    def call() -> None:
        began = time.monotonic()
        try:
            probe.result()
        except ProbeTimeout:
            outcomes.append(time.monotonic() - began)

    callers = [threading.Thread(target=call) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(5)
    assert len(outcomes) == 4
    assert max(outcomes) < 2.0
    # Past the deadline, a caller does not wait at all for the read still stuck.
    began = time.monotonic()
    with pytest.raises(ProbeTimeout):
        probe.result()
    assert time.monotonic() - began < 0.1
    assert calls == [1]
    release.set()  # the server is back: the stuck read returns, and the next caller starts a fresh one
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        try:
            assert probe.result() == "late"
        except ProbeTimeout:
            time.sleep(0.01)
    assert calls == [1, 1]
