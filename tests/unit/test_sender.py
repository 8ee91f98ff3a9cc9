"""The receiver's sender thread (subsync.queue.BackgroundSender), without servers."""

from __future__ import annotations

import threading
import time

from subsync import logs
from subsync.queue import SEND_BATCH, BackgroundSender, flush_senders

# Log lines through the standard library, where caplog looks, as the app
# configures them; before any test, since configuring replaces the root handlers.
logs.configure("console")


class Recorder:
    """A send function that records its batches; `gate` holds it until set."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_first = fail_first

    def __call__(self, ids: list[str]) -> int:
        self.gate.wait(10)
        self.batches.append(list(ids))
        if self.fail_first and len(self.batches) == 1:
            msg = "a bug in the send path"
            raise RuntimeError(msg)
        return len(ids)

    @property
    def sent(self) -> list[str]:
        return [i for batch in self.batches for i in batch]


def test_every_id_handed_over_is_sent_in_order_in_bounded_batches():
    send = Recorder()
    sender = BackgroundSender(send)
    ids = [f"evt_{n}" for n in range(SEND_BATCH * 2 + 5)]
    send.gate.clear()  # let them pile up, as under a burst
    assert sender.submit(ids) == len(ids)
    send.gate.set()
    assert sender.flush(10)
    assert send.sent == ids
    assert max(len(b) for b in send.batches) <= SEND_BATCH


def test_a_full_backlog_takes_what_fits_and_leaves_the_rest_to_the_sweep(caplog):
    send = Recorder()
    send.gate.clear()  # Redis stalled: nothing leaves
    sender = BackgroundSender(send, limit=3)
    assert sender.submit(["evt_a"]) == 1
    # The thread holds evt_a while its send is stalled; the backlog takes 3 more.
    deadline = time.monotonic() + 10
    while sender._ids.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender._ids.qsize() == 0
    with caplog.at_level("WARNING"):
        assert sender.submit(["evt_b", "evt_c", "evt_d", "evt_e", "evt_f"]) == 3
    assert any(isinstance(r.msg, dict) and r.msg.get("event") == "send_backlog_full" for r in caplog.records)
    assert not sender.flush(0.1)  # still stalled
    send.gate.set()
    assert sender.flush(10)
    assert send.sent == ["evt_a", "evt_b", "evt_c", "evt_d"]


def test_a_send_that_raises_does_not_stop_the_thread():
    send = Recorder(fail_first=True)
    sender = BackgroundSender(send)
    sender.submit(["evt_1"])
    assert sender.flush(10)
    sender.submit(["evt_2"])
    assert sender.flush(10)
    assert send.sent == ["evt_1", "evt_2"]


def test_flush_senders_waits_for_every_sender_of_the_process():
    send = Recorder()
    send.gate.clear()
    sender = BackgroundSender(send)
    sender.submit(["evt_pending"])
    threading.Timer(0.2, send.gate.set).start()
    assert flush_senders(10)
    assert send.sent == ["evt_pending"]


def test_a_lone_delivery_is_sent_alone_at_once():
    send = Recorder()
    sender = BackgroundSender(send, linger_s=30)  # a wait would show as a flush timing out
    for n in range(3):
        sender.submit([f"evt_{n}"])
        assert sender.flush(5)
    assert send.batches == [["evt_0"], ["evt_1"], ["evt_2"]]


def test_under_concurrent_deliveries_a_message_waits_to_fill():
    send = Recorder()
    sender = BackgroundSender(send, linger_s=1.0)
    send.gate.clear()
    sender.submit(["evt_a"])  # being sent, stalled: the next ones pile up behind it
    deadline = time.monotonic() + 10
    while sender._ids.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    sender.submit(["evt_b", "evt_c"])
    send.gate.set()
    time.sleep(0.2)  # within the linger of the message that holds evt_b and evt_c
    sender.submit(["evt_d"])
    assert sender.flush(10)
    assert send.batches == [["evt_a"], ["evt_b", "evt_c", "evt_d"]]
